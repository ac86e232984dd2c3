//! Turning a job's input into the token ids the miner's server fed its model.
//!
//! The network's miners run vLLM. For chat `messages`, vLLM renders the Jinja
//! `chat_template` of the model's `tokenizer_config.json` with
//! `add_generation_prompt = true` and tokenizes the result without adding special
//! tokens (the template writes the BOS itself). For a plain `prompt`
//! (`/v1/completions`) it tokenizes the prompt with the tokenizer's special tokens
//! (the BOS). [`Prompter`] does the same with the same files.

use std::path::Path;

use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::record::{LlmInput, Message};

/// The parts of `tokenizer_config.json` that shape a prompt.
#[derive(Debug, Clone, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<String>,
    #[serde(default, deserialize_with = "token_text")]
    bos_token: Option<String>,
    #[serde(default, deserialize_with = "token_text")]
    eos_token: Option<String>,
}

/// `bos_token` is a string or an `AddedToken` object with a `content` field.
fn token_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Token {
        Text(String),
        Added { content: String },
    }
    Ok(Option::<Token>::deserialize(d)?.map(|t| match t {
        Token::Text(s) | Token::Added { content: s } => s,
    }))
}

/// A model's tokenizer and chat template.
pub struct Prompter {
    pub tokenizer: Tokenizer,
    /// The chat template, parsed once, as template `chat`; `None` without one.
    templates: Option<minijinja::Environment<'static>>,
    bos_token: String,
    eos_token: String,
    /// The token that ends an answer: the tokenizer config's `eos_token` (for
    /// Llama-3 Instruct, `<|eot_id|>`).
    pub eos_id: u32,
}

impl Prompter {
    /// Reads `tokenizer.json` and `tokenizer_config.json` from a model folder.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("{}/tokenizer.json: {e}", dir.display()))?;
        let path = dir.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Prompter::new(tokenizer, &text).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
    }

    /// A tokenizer with the text of its `tokenizer_config.json`.
    pub fn new(tokenizer: Tokenizer, tokenizer_config: &str) -> anyhow::Result<Self> {
        let config: TokenizerConfig = serde_json::from_str(tokenizer_config)?;
        let eos_token = config
            .eos_token
            .ok_or_else(|| anyhow::anyhow!("no eos_token"))?;
        let eos_id = tokenizer
            .token_to_id(&eos_token)
            .ok_or_else(|| anyhow::anyhow!("eos_token {eos_token:?} is not in the vocabulary"))?;
        let templates = config
            .chat_template
            .map(|t| {
                let mut env = minijinja::Environment::new();
                minijinja_contrib::add_to_environment(&mut env);
                env.set_unknown_method_callback(
                    minijinja_contrib::pycompat::unknown_method_callback,
                );
                env.add_function(
                    "raise_exception",
                    |msg: String| -> Result<(), minijinja::Error> {
                        Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            msg,
                        ))
                    },
                );
                env.add_template_owned("chat", t)?;
                anyhow::Ok(env)
            })
            .transpose()
            .map_err(|e| anyhow::anyhow!("chat_template: {e:#}"))?;
        Ok(Prompter {
            tokenizer,
            templates,
            bos_token: config.bos_token.unwrap_or_default(),
            eos_token,
            eos_id,
        })
    }

    /// The prompt text the model reads: the chat template applied to `messages`.
    pub fn render(&self, messages: &[Message]) -> anyhow::Result<String> {
        let env = self
            .templates
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the model has no chat_template"))?;
        Ok(env.get_template("chat")?.render(minijinja::context! {
            messages => minijinja::value::Serde(messages),
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            add_generation_prompt => true,
        })?)
    }

    /// The token ids of a job's prompt, as the miner's server built them.
    pub fn prompt_ids(&self, input: &LlmInput) -> anyhow::Result<Vec<u32>> {
        let (text, special) = match (&input.messages, &input.prompt) {
            (Some(m), _) => (self.render(m)?, false),
            (None, Some(p)) => (p.clone(), true),
            (None, None) => anyhow::bail!("the job has neither messages nor a prompt"),
        };
        self.encode(&text, special)
    }

    /// Token ids of `text`; with `special`, the tokenizer's own additions (the BOS).
    pub fn encode(&self, text: &str, special: bool) -> anyhow::Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, special)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| anyhow::anyhow!("detokenizing: {e}"))
    }

    /// One token's text, as the scores show it.
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Role;

    fn fixture_tokenizer() -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-alice");
        Tokenizer::from_file(dir.join("tokenizer.json")).unwrap()
    }

    fn msg(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn the_llama3_template_renders_as_vllm_does() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-alice");
        let p = Prompter::load(&dir).unwrap();
        let text = p
            .render(&[
                msg(Role::System, "Be brief."),
                msg(Role::User, "  Who is Alice?  "),
            ])
            .unwrap();
        assert_eq!(
            text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nWho is Alice?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        // Special tokens are single ids; the rendered text carries its own BOS.
        let input = LlmInput {
            messages: Some(vec![msg(Role::User, "Hi")]),
            prompt: None,
            temperature: 0.0,
            max_tokens: 1,
            seed: None,
            ..Default::default()
        };
        let ids = p.prompt_ids(&input).unwrap();
        let bos = p.tokenizer.token_to_id("<|begin_of_text|>").unwrap();
        assert_eq!(ids[0], bos);
        assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1);
        assert_eq!(ids.iter().filter(|&&i| i == p.eos_id).count(), 1);
        // A plain prompt gets the tokenizer's BOS, as /v1/completions does.
        let plain = p
            .prompt_ids(&LlmInput {
                messages: None,
                prompt: Some("Alice".into()),
                ..input
            })
            .unwrap();
        assert_eq!(plain[0], bos);
        assert_eq!(p.decode(&plain[1..]).unwrap(), "Alice");
    }

    #[test]
    fn hugging_face_template_idioms_work_and_raise_exception_fails_the_render() {
        // Mistral's shape: Python string methods and raise_exception on bad roles.
        let config = serde_json::json!({
            "eos_token": "<|eot_id|>",
            "bos_token": {"content": "<|begin_of_text|>"},
            "chat_template": "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'].strip() }} [/INST]{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
        });
        let p = Prompter::new(fixture_tokenizer(), &config.to_string()).unwrap();
        assert_eq!(
            p.render(&[msg(Role::User, " hello ")]).unwrap(),
            "<|begin_of_text|>[INST] hello [/INST]"
        );
        let err = p.render(&[msg(Role::System, "x")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("Only user and assistant"),
            "{err:#}"
        );
        // No template: chat jobs cannot be prompted, and say why.
        let bare = Prompter::new(fixture_tokenizer(), r#"{"eos_token": "<|eot_id|>"}"#).unwrap();
        assert!(bare.render(&[msg(Role::User, "hi")]).is_err());
        // An eos_token outside the vocabulary is refused at load.
        assert!(Prompter::new(fixture_tokenizer(), r#"{"eos_token": "<nope>"}"#).is_err());
    }
}
