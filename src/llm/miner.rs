//! What the network's own miner software does to a job and to its answer.
//!
//! An honest miner runs `heurist-network/miner-release` (`llm-miner.py`,
//! `llm_mining_core/`) in front of a vLLM server. Between the job service and vLLM it
//! decodes the job's one `prompt` string into chat messages, caps `max_tokens`, turns a
//! seed of -1 into "unseeded" and adds its own stop words. Between vLLM and the job
//! service it cuts the answer at a stop word and, on streaming jobs, re-chunks the stream
//! on spaces, appends `" "` after the last piece and sends `[DONE]` as an end marker.
//!
//! The reference must score what the miner's server actually saw and generated, not what
//! the job service meant, or an honest miner fails on the miner software's own quirks (a
//! trailing space scored as a token the model never chose, a prompt the decoder mangled).
//! This module reproduces those transformations exactly, quirks included, so that
//! [`served`] gives the job as the miner's server ran it and [`generated_text`] the text
//! as its model generated it. The table tests below follow the miner's Python line by
//! line; where a quirk looks like a bug, it is kept and named, because it is what honest
//! miners do.
//!
//! Two releases differ:
//! - `llm-v1.0.x` and `llm-v1.1.x` ([`Release::Legacy`]) pick a decoder by model family
//!   ([`decoder_for`]), cap `max_tokens` at vLLM's `--max-model-len` (8192) and cut a
//!   non-streamed answer at the first stop word found.
//! - `llm-v1.2.0` and later ([`Release::Json`]) parse the prompt as JSON messages
//!   (`json.loads`) and cap `max_tokens` at 4096. A non-streamed answer is submitted as
//!   `json.dumps` of vLLM's `choices`; the job service extracts the text from it.
//!
//! Both start vLLM with `--dtype half`: honest miners run f16 weights and activations.

use serde_json::Value;

use crate::record::{LlmInput, Message, Role};

/// The miner's stop words (`BaseConfig.stop_words`), sent with every request. vLLM stops
/// at the first and leaves it out of the text.
pub const STOP_WORDS: [&str; 4] = ["[End]", "[end]", "<|im_start|>", "<|im_end|>"];

/// The end marker the miner sends after a streamed answer (`BaseConfig.eos`).
pub const STREAM_END: &str = "[DONE]";

/// The miner's releases that treat a job differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// `llm-v1.0.x`, `llm-v1.1.x`: per-family prompt decoders.
    Legacy,
    /// `llm-v1.2.0` and later: the prompt is JSON messages.
    Json,
}

impl Release {
    /// The release a `metrics.miner_version` names (`llm-v1.2.0`, `v1.1.3`, `1.0.0`).
    /// A version that does not parse is taken as today's release: the job service
    /// refuses miners older than the release it serves.
    pub fn of(miner_version: &str) -> Release {
        let v = miner_version.trim();
        let v = v.strip_prefix("llm-").unwrap_or(v);
        let v = v.strip_prefix('v').unwrap_or(v);
        let mut parts = v.split('.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor))) if (major, minor) < (1, 2) => Release::Legacy,
            _ => Release::Json,
        }
    }

    /// The most tokens the miner asks vLLM for, whatever the job asked: v1.2 caps
    /// `max_tokens` at 4096; earlier releases at `LLMServerConfig.MAX_MODEL_LEN`.
    pub fn max_tokens_cap(self) -> u32 {
        match self {
            Release::Legacy => 8192,
            Release::Json => 4096,
        }
    }
}

/// How the miner turns the job's `prompt` string into chat messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// `decode_prompt_llama`: Llama-2 `[INST] <<SYS>>` markup.
    Llama,
    /// `decode_prompt_mistral`: `[INST] … [/INST]` turns; the system prompt is dropped.
    Mistral,
    /// `decode_prompt_chatml`: a regular expression whose `|` are unescaped, so it
    /// matches `>role…<` between the markers rather than whole ChatML turns.
    ChatMl,
    /// v1.2's `json.loads`.
    Json,
}

/// The decoder the miner picks for a model, or `None` where the legacy miner serves no
/// such model (it logs "not supported" and answers nothing). The legacy dispatch is by
/// substring, in this order, so `hermes-3-llama3.1-8b` (ChatML underneath) is decoded
/// as Llama-2 markup.
pub fn decoder_for(model_id: &str, release: Release) -> Option<Decoder> {
    match release {
        Release::Json => Some(Decoder::Json),
        Release::Legacy if model_id.contains("openhermes") || model_id.contains("dolphin") => {
            Some(Decoder::ChatMl)
        }
        Release::Legacy if model_id.contains("llama") => Some(Decoder::Llama),
        Release::Legacy if model_id.contains("mistral") => Some(Decoder::Mistral),
        Release::Legacy => None,
    }
}

/// Why the miner's server never saw a job, or saw one the reference cannot rebuild.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServed {
    #[error("miner release {release:?} serves no model named {model_id:?}")]
    UnsupportedModel { model_id: String, release: Release },
    #[error("the miner's {decoder:?} decoder finds no message in the prompt")]
    NoMessages { decoder: Decoder },
    #[error("the miner's JSON decoding of the prompt: {0}")]
    Json(String),
}

/// Python's `str.strip()`: `str.isspace` also holds for the separators U+001C–U+001F,
/// which Rust's `char::is_whitespace` leaves out.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

fn message(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.to_owned(),
    }
}

/// `decode_prompt_llama`, line for line.
fn decode_llama(p: &str) -> Vec<Message> {
    const SYSTEM_START: &str = "[INST] <<SYS>>\n";
    const SYSTEM_END: &str = "\n<</SYS>>\n [/INST]\n";
    const USER_START: &str = "[INST] ";
    const USER_END: &str = " [/INST]\n";
    const ASSISTANT_END: &str = "</s>";
    let find_from = |needle: &str, from: usize| p[from..].find(needle).map(|i| i + from);

    let mut messages = Vec::new();
    let mut pos = 0;
    if let Some(at) = p.find(SYSTEM_START) {
        let start = at + SYSTEM_START.len();
        if let Some(end) = find_from(SYSTEM_END, start) {
            messages.push(message(Role::System, py_strip(&p[start..end])));
            pos = end + SYSTEM_END.len();
        }
    }
    // Once the user turn's end marker is missing after some position, it is missing
    // after every later one: searching again would make a hostile prompt of many turns
    // quadratic, for the same answer.
    let mut user_end_missing = false;
    while pos < p.len() {
        if p[pos..].starts_with(USER_START) {
            pos += USER_START.len();
            // Without its end marker the user turn is skipped, and what follows up to
            // `</s>` becomes an "assistant" message, user text and all.
            let end = if user_end_missing {
                None
            } else {
                find_from(USER_END, pos)
            };
            match end {
                Some(end) => {
                    messages.push(message(Role::User, py_strip(&p[pos..end])));
                    pos = end + USER_END.len();
                }
                None => user_end_missing = true,
            }
        }
        match find_from(ASSISTANT_END, pos) {
            Some(end) => {
                messages.push(message(Role::Assistant, py_strip(&p[pos..end])));
                pos = end + ASSISTANT_END.len();
            }
            None => break,
        }
    }
    messages
}

/// `decode_prompt_mistral`, line for line.
fn decode_mistral(p: &str) -> Vec<Message> {
    const INST_START: &str = "[INST]";
    const INST_END: &str = "[/INST]";
    const ASSISTANT_END: &str = "</s>";
    let mut messages = Vec::new();
    for segment in p.split(INST_START).skip(1) {
        let Some(end) = segment.find(INST_END) else {
            continue;
        };
        let user = py_strip(&segment[..end]);
        let following = py_strip(&segment[end + INST_END.len()..]);
        let assistant = match following.find(ASSISTANT_END) {
            Some(e) => py_strip(&following[..e]),
            None => following,
        };
        // The user turn is kept even when empty; the assistant turn only when not.
        messages.push(message(Role::User, user));
        if !assistant.is_empty() {
            messages.push(message(Role::Assistant, assistant));
        }
    }
    messages
}

/// `decode_prompt_chatml`: `re.compile(r"<|im_start|>(system|assistant|user)(.*?)<|im_end|>\n",
/// re.DOTALL)` and `finditer`. The unescaped `|` make it an alternation of five
/// patterns; only the third, `>(system|assistant|user)(.*?)<`, has groups, so each
/// message is a role right after a `>` and its content runs to the next `<`, unstripped
/// (on real ChatML, with its leading newline). A content holding `<` is cut there.
fn decode_chatml(p: &str) -> Vec<Message> {
    // Leftmost-first alternation and non-overlapping matches, as Python's `re` has; the
    // pattern needs no backtracking feature the `regex` crate lacks.
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        regex::Regex::new(r"(?s)<|im_start|>(system|assistant|user)(.*?)<|im_end|>\n")
            .expect("the miner's pattern compiles")
    });
    pattern
        .captures_iter(p)
        .filter_map(|c| {
            let (role, content) = (c.get(1)?.as_str(), c.get(2)?.as_str());
            if content.is_empty() {
                return None;
            }
            let role = match role {
                "system" => Role::System,
                "assistant" => Role::Assistant,
                _ => Role::User,
            };
            Some(message(role, content))
        })
        .collect()
}

/// v1.2's `json.loads`, handed to vLLM as `messages`. Python keeps the last of
/// duplicate keys, as `serde_json::Value` does. Roles this reference cannot render
/// (tools) and non-text contents make the job unscorable, not the miner wrong.
fn decode_json(p: &str) -> Result<Vec<Message>, NotServed> {
    let bad = |m: String| NotServed::Json(m);
    let value: Value = serde_json::from_str(p).map_err(|e| bad(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(bad("not a list of messages".into()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let role = match item.get("role").and_then(Value::as_str) {
                Some("system") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                other => return Err(bad(format!("message {i} has role {other:?}"))),
            };
            match item.get("content").and_then(Value::as_str) {
                Some(content) => Ok(message(role, content)),
                None => Err(bad(format!("message {i} has no text content"))),
            }
        })
        .collect()
}

/// The chat messages the miner hands its vLLM server for a job's `prompt` string.
pub fn decode_prompt(decoder: Decoder, prompt: &str) -> Result<Vec<Message>, NotServed> {
    let messages = match decoder {
        Decoder::Llama => decode_llama(prompt),
        Decoder::Mistral => decode_mistral(prompt),
        Decoder::ChatMl => decode_chatml(prompt),
        Decoder::Json => decode_json(prompt)?,
    };
    // vLLM refuses an empty conversation; the miner then submits nothing.
    if messages.is_empty() {
        return Err(NotServed::NoMessages { decoder });
    }
    Ok(messages)
}

/// The job as the miner's vLLM server ran it: the messages its decoder gave (where the
/// record carries the raw prompt), `max_tokens` under the release's cap, a seed of -1
/// as no seed, and the stop list in force (the record's, else the miner's own).
pub fn served(
    model_id: &str,
    miner_version: &str,
    input: &LlmInput,
) -> Result<LlmInput, NotServed> {
    let release = Release::of(miner_version);
    let mut served = input.clone();
    if let Some(raw) = &input.raw_prompt {
        let decoder =
            decoder_for(model_id, release).ok_or_else(|| NotServed::UnsupportedModel {
                model_id: model_id.to_owned(),
                release,
            })?;
        served.messages = Some(decode_prompt(decoder, raw)?);
        served.raw_prompt = None;
    }
    served.max_tokens = input.max_tokens.min(release.max_tokens_cap());
    served.seed = input.seed.filter(|&s| s != -1);
    served.stop = Some(
        input
            .stop
            .clone()
            .unwrap_or_else(|| STOP_WORDS.iter().map(|s| (*s).to_owned()).collect()),
    );
    Ok(served)
}

/// What the reference scores for a miner's answer: the job as the miner's server ran it
/// ([`served`]) and the text as its model generated it ([`generated_text`]).
pub fn as_generated<'a>(
    model_id: &str,
    miner_version: &str,
    input: &LlmInput,
    text: &'a str,
) -> Result<(LlmInput, &'a str), NotServed> {
    let served = served(model_id, miner_version, input)?;
    Ok((served, generated_text(text, input.use_stream)))
}

/// Whether a token's text could begin one of the stop words, so that the server, having
/// sampled it, would cut the text before it: some tail of the token is a prefix of a
/// stop word, or starts with one. A stop word can begin inside a token (`.[`, ` <`).
pub fn could_start_stop(token_text: &str, stop: &[String]) -> bool {
    token_text.char_indices().any(|(i, _)| {
        let tail = &token_text[i..];
        stop.iter()
            .any(|w| !w.is_empty() && (w.starts_with(tail) || tail.starts_with(w.as_str())))
    })
}

/// The legacy non-streamed answer: cut at the first stop word of the list (in list
/// order, not the earliest in the text) that occurs.
pub fn cut_at_stop<'a>(text: &'a str, stop: &[&str]) -> &'a str {
    stop.iter()
        .find_map(|w| text.find(w))
        .map_or(text, |at| &text[..at])
}

/// The pieces the miner's `generate_data` uploads for a stream whose chunks carry these
/// `delta.content` values (`None` where a chunk has none), `STREAM_END` included. `None`
/// where the miner gives up: no content in the first chunk nor the second.
///
/// Quirks kept: the first content is sent as it comes; later text is re-chunked on
/// spaces, each piece sent with its space; the last piece gets a `" "` appended. A stop
/// word found in the buffer (vLLM holds stop words back, so only in a stream that did
/// not) sends the text before it and `[DONE]`, yet the loop goes on, so the buffer's
/// text is sent again at the end, followed by a second `[DONE]`.
pub fn stream_pieces(chunks: &[Option<&str>], stop: &[&str]) -> Option<Vec<String>> {
    let mut rest = chunks.iter();
    let initial = match rest.next()? {
        Some(first) if !first.is_empty() => *first,
        _ => match rest.next()? {
            Some(second) if !second.is_empty() => *second,
            _ => return None,
        },
    };
    let mut pieces = vec![initial.to_owned()];
    let mut buffer = String::new();
    for data in rest.flatten() {
        buffer.push_str(data);
        if buffer.contains(' ') || buffer.contains('\n') {
            let words: Vec<&str> = buffer.split(' ').collect();
            let (last, complete) = words.split_last().expect("split yields at least one");
            pieces.extend(complete.iter().map(|w| format!("{w} ")));
            buffer = (*last).to_owned();
        }
        if let Some(at) = stop.iter().find_map(|w| buffer.find(w)) {
            buffer.truncate(at);
            if !buffer.is_empty() {
                pieces.push(format!("{buffer} "));
            }
            pieces.push(STREAM_END.to_owned());
        }
    }
    if !buffer.is_empty() {
        pieces.push(format!("{buffer} "));
    }
    pieces.push(STREAM_END.to_owned());
    Some(pieces)
}

/// The text the job service stores for a streamed answer: the uploaded body up to its
/// first end marker.
pub fn streamed_text(pieces: &[String]) -> String {
    pieces
        .iter()
        .take_while(|p| p.as_str() != STREAM_END)
        .map(String::as_str)
        .collect()
}

/// The text the miner's model generated, from the text the job service stored: on a
/// streamed job (or one whose mode is not known) a trailing end marker and the one
/// space the re-chunker appends after the last piece come off. The space is not
/// evidence of anything; a text that still ends in whitespace after it is judged as one
/// that may have been cut at a stop word inside a token.
pub fn generated_text(text: &str, use_stream: Option<bool>) -> &str {
    if use_stream == Some(false) {
        return text;
    }
    let text = text.strip_suffix(STREAM_END).unwrap_or(text);
    text.strip_suffix(' ').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(m: &[(Role, &str)]) -> Vec<Message> {
        m.iter().map(|(r, c)| message(*r, c)).collect()
    }

    use Role::{Assistant as A, System as S, User as U};

    #[test]
    fn a_token_could_start_a_stop_word_where_any_tail_of_it_begins_one() {
        let stop: Vec<String> = STOP_WORDS.iter().map(|s| s.to_string()).collect();
        for t in [
            "[",
            " [",
            ".[",
            "[E",
            "[End",
            "[End]",
            "x[End]y",
            " <",
            "<|",
            "<|im_end|>",
        ] {
            assert!(could_start_stop(t, &stop), "{t:?}");
        }
        for t in ["", " ", "End", "[0", "[]", "<b", "Paris", "]"] {
            assert!(!could_start_stop(t, &stop), "{t:?}");
        }
        assert!(!could_start_stop("[", &[]));
    }

    #[test]
    fn the_release_comes_from_the_miner_version() {
        for (v, release) in [
            ("llm-v1.2.0", Release::Json),
            ("llm-v1.10.0", Release::Json),
            ("llm-v2.0.0", Release::Json),
            ("llm-v1.1.9", Release::Legacy),
            ("llm-v1.0.0", Release::Legacy),
            ("v0.0.1", Release::Legacy),
            ("1.1.0", Release::Legacy),
            ("custom-build", Release::Json),
            ("", Release::Json),
        ] {
            assert_eq!(Release::of(v), release, "{v}");
        }
        assert_eq!(Release::Legacy.max_tokens_cap(), 8192);
        assert_eq!(Release::Json.max_tokens_cap(), 4096);
    }

    #[test]
    fn the_legacy_miner_picks_its_decoder_by_substring_in_order() {
        let l = Release::Legacy;
        for (model, decoder) in [
            ("openhermes-mixtral-8x7b-gptq", Some(Decoder::ChatMl)),
            ("dolphin-2.9-llama3-8b", Some(Decoder::ChatMl)),
            // Hermes 3 speaks ChatML, but "llama" comes first in the miner's test.
            ("hermes-3-llama3.1-8b", Some(Decoder::Llama)),
            ("meta-llama/llama-3.3-70b-instruct", Some(Decoder::Llama)),
            ("mistralai/mistral-7b-instruct-v0.2", Some(Decoder::Mistral)),
            ("Mistral-7B", None),
            ("deepseek/deepseek-v3", None),
        ] {
            assert_eq!(decoder_for(model, l), decoder, "{model}");
        }
        assert_eq!(
            decoder_for("deepseek/deepseek-v3", Release::Json),
            Some(Decoder::Json)
        );
    }

    #[test]
    fn the_llama_decoder_strips_each_turn() {
        let cases: &[(&str, Vec<Message>)] = &[
            (
                "[INST] <<SYS>>\n  Be brief. \n<</SYS>>\n [/INST]\n[INST]  Hi there  [/INST]\n Hello! </s>[INST] Bye [/INST]\n",
                msgs(&[(S, "Be brief."), (U, "Hi there"), (A, "Hello!"), (U, "Bye")]),
            ),
            // A user turn is read before the search for `</s>` that ends the loop.
            ("[INST] Hi [/INST]\n", msgs(&[(U, "Hi")])),
            // A user turn without its end marker: the rest up to `</s>` is an assistant turn.
            ("[INST] Hi there</s>", msgs(&[(A, "Hi there")])),
            // Text before any marker is an assistant turn too.
            (
                "hello</s>[INST] x [/INST]\ny</s>",
                msgs(&[(A, "hello"), (U, "x"), (A, "y")]),
            ),
            // A system block without its end marker is ignored.
            ("[INST] <<SYS>>\nsys", vec![]),
            // Python's strip also takes U+001C..U+001F.
            ("\u{1c}a\u{1f}</s>", msgs(&[(A, "a")])),
        ];
        for (prompt, want) in cases {
            assert_eq!(&decode_llama(prompt), want, "{prompt:?}");
        }
    }

    #[test]
    fn a_long_prompt_of_unfinished_user_turns_decodes_as_the_miner_does() {
        // Many turns whose ` [/INST]\n` never comes: each is an assistant message.
        let turns = 100_000;
        let prompt = "[INST] x</s>".repeat(turns);
        let messages = decode_llama(&prompt);
        assert_eq!(messages.len(), turns);
        assert!(messages.iter().all(|m| *m == message(Role::Assistant, "x")));
    }

    #[test]
    fn the_mistral_decoder_drops_the_system_prompt_and_keeps_empty_user_turns() {
        let cases: &[(&str, Vec<Message>)] = &[
            (
                "<s>[INST] Hi [/INST] Hello</s>[INST] Bye [/INST]",
                msgs(&[(U, "Hi"), (A, "Hello"), (U, "Bye")]),
            ),
            ("system text [INST][/INST]", msgs(&[(U, "")])),
            ("[INST] no end", vec![]),
            (
                "[INST] q [/INST] a </s> trailing",
                msgs(&[(U, "q"), (A, "a")]),
            ),
        ];
        for (prompt, want) in cases {
            assert_eq!(&decode_mistral(prompt), want, "{prompt:?}");
        }
    }

    #[test]
    fn the_chatml_decoder_matches_what_its_unescaped_pattern_matches() {
        let chatml = "<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi <b>there</b><|im_end|>\n<|im_start|>assistant\n";
        // Contents keep their leading newline and end at the first `<`; the open
        // assistant turn has no `<` after it and is not matched.
        assert_eq!(
            decode_chatml(chatml),
            msgs(&[(S, "\nYou are kind."), (U, "\nHi ")])
        );
        // What the name promises is not required: any `>role…<` is a message.
        assert_eq!(decode_chatml("a>user hello<b"), msgs(&[(U, " hello")]));
        // A role with no content before the `<` is dropped.
        assert_eq!(decode_chatml(">user<"), vec![]);
        assert_eq!(decode_chatml("no markup at all"), vec![]);
        assert!(matches!(
            decode_prompt(Decoder::ChatMl, "plain"),
            Err(NotServed::NoMessages {
                decoder: Decoder::ChatMl
            })
        ));
    }

    #[test]
    fn the_json_decoder_takes_messages_and_refuses_what_the_reference_cannot_render() {
        assert_eq!(
            decode_prompt(
                Decoder::Json,
                r#"[{"role":"system","content":"s"},{"role":"user","content":"u","role":"assistant"}]"#
            )
            .unwrap(),
            msgs(&[(S, "s"), (A, "u")])
        );
        for bad in [
            "not json",
            "{}",
            "null",
            "[]",
            r#"[{"role":"tool","content":"x"}]"#,
            r#"[{"role":"user","content":[{"type":"text","text":"x"}]}]"#,
        ] {
            assert!(decode_prompt(Decoder::Json, bad).is_err(), "{bad}");
        }
    }

    fn input() -> LlmInput {
        LlmInput {
            messages: None,
            prompt: None,
            raw_prompt: Some(r#"[{"role":"user","content":"Hi"}]"#.into()),
            temperature: 0.7,
            max_tokens: 10_000,
            seed: Some(-1),
            use_stream: Some(true),
            stop: None,
        }
    }

    #[test]
    fn the_served_job_is_decoded_capped_unseeded_and_carries_the_stop_words() {
        let s = served("hermes-3-llama3.1-8b", "llm-v1.2.0", &input()).unwrap();
        assert_eq!(s.messages, Some(msgs(&[(U, "Hi")])));
        assert_eq!(s.raw_prompt, None);
        assert_eq!(s.max_tokens, 4096);
        assert_eq!(s.seed, None);
        assert_eq!(s.stop.as_deref().map(<[String]>::len), Some(4));
        // The legacy release decodes the same string as Llama-2 markup: no message.
        assert!(matches!(
            served("hermes-3-llama3.1-8b", "llm-v1.1.0", &input()),
            Err(NotServed::NoMessages {
                decoder: Decoder::Llama
            })
        ));
        let mut legacy = input();
        legacy.raw_prompt = Some("[INST] Hi [/INST]\nHello</s>".into());
        legacy.seed = Some(7);
        legacy.stop = Some(vec![]);
        let s = served("hermes-3-llama3.1-8b", "llm-v1.1.0", &legacy).unwrap();
        assert_eq!(s.messages, Some(msgs(&[(U, "Hi"), (A, "Hello")])));
        assert_eq!((s.max_tokens, s.seed), (8192, Some(7)));
        assert_eq!(s.stop, Some(vec![]));
        assert!(matches!(
            served("deepseek/deepseek-v3", "llm-v1.1.0", &legacy),
            Err(NotServed::UnsupportedModel { .. })
        ));
        // A record with messages and no raw prompt keeps them.
        let mut plain = input();
        plain.raw_prompt = None;
        plain.messages = Some(msgs(&[(U, "x")]));
        assert_eq!(
            served("m", "llm-v1.2.0", &plain).unwrap().messages,
            Some(msgs(&[(U, "x")]))
        );
    }

    #[test]
    fn a_legacy_answer_is_cut_at_the_first_listed_stop_word_found() {
        let stop = STOP_WORDS;
        assert_eq!(cut_at_stop("a [end] b [End] c", &stop), "a [end] b ");
        assert_eq!(cut_at_stop("a<|im_end|>b", &stop), "a");
        assert_eq!(cut_at_stop("no stop", &stop), "no stop");
        assert_eq!(cut_at_stop("[End]", &stop), "");
    }

    #[test]
    fn the_stream_is_rechunked_on_spaces_with_a_space_after_the_last_piece() {
        let stop = STOP_WORDS;
        // The chunks' contents, and the pieces uploaded (`None`: the miner gives up).
        type Case<'a> = (&'a [Option<&'a str>], Option<&'a [&'a str]>);
        let cases: &[Case] = &[
            // vLLM's first chunk carries the role and an empty content.
            (
                &[Some(""), Some("Hello"), Some(" wor"), Some("ld."), None],
                Some(&["Hello", " ", "world. ", "[DONE]"]),
            ),
            (
                &[Some("The"), Some(" cap"), Some("ital is Paris.")],
                Some(&["The", " ", "capital ", "is ", "Paris. ", "[DONE]"]),
            ),
            // A text that ends on a space gets none appended.
            (&[Some("A"), Some(" b ")], Some(&["A", " ", "b ", "[DONE]"])),
            // A newline alone does not split, but keeps the buffer whole.
            (
                &[Some("A"), Some("x\ny"), Some(" z")],
                Some(&["A", "x\ny ", "z ", "[DONE]"]),
            ),
            // Nothing in the first two chunks: the miner gives up.
            (&[Some(""), Some("")], None),
            (&[None, None, Some("late")], None),
            (&[Some("")], None),
            (&[], None),
            // A stop word in the buffer: text before it and [DONE], then the loop goes
            // on, and the buffer is sent again at the end.
            (
                &[Some("Q"), Some("ok[End]"), Some("more")],
                Some(&["Q", "ok ", "[DONE]", "okmore ", "[DONE]"]),
            ),
        ];
        for (chunks, want) in cases {
            let got = stream_pieces(chunks, &stop);
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{chunks:?}");
        }
    }

    #[test]
    fn the_stored_stream_undoes_to_what_the_model_generated() {
        let stop = STOP_WORDS;
        let generated = "The capital of France is Paris.";
        let chunks = [
            Some(""),
            Some("The"),
            Some(" capital of"),
            Some(" France is Paris."),
        ];
        let stored = streamed_text(&stream_pieces(&chunks, &stop).unwrap());
        assert_eq!(stored, "The capital of France is Paris. ");
        assert_eq!(generated_text(&stored, Some(true)), generated);
        // The marker is taken off too, should the job service keep it.
        assert_eq!(
            generated_text(&format!("{stored}{STREAM_END}"), Some(true)),
            generated
        );
        // Not streamed: the text is as the model left it.
        assert_eq!(generated_text(&stored, Some(false)), stored);
        // Unknown mode: the one space is not evidence either way.
        assert_eq!(generated_text(&stored, None), generated);
        // Only one space comes off.
        assert_eq!(generated_text("a  ", Some(true)), "a ");
    }
}
