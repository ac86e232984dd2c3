//! A Llama-architecture decoder whose forward pass returns the logits at every
//! position, which teacher-forced scoring needs. (`candle-transformers`' `llama` and
//! `quantized_llama` return the last position's only: they are built for generation.)
//!
//! Weights use the Hugging Face names (`model.layers.{i}.self_attn.q_proj.weight`, …),
//! so a Llama-3/3.1 8B finetune's `config.json` + `*.safetensors` load as they are.
//!
//! **Memory.** No key/value cache is kept: a scoring pass sees the whole sequence at
//! once. For a batch of `b` sequences padded to `t` tokens, with hidden size `h`,
//! `n` attention heads, `L` layers and vocabulary `V`, the peak beyond the weights is
//! about `b·t·h` (the residual stream) + `b·n·t²` (one layer's attention scores, in the
//! attention dtype) + `b·t·V·4` bytes (the f32 logits), and does not grow with `L`:
//! each layer's activations are dropped before the next runs. For Llama-3 8B
//! (`h` 4096, `n` 32, `V` 128,256) scoring one 2,048-token job in f16 that is
//! 16 MiB + 256 MiB + 1 GiB on top of 16 GiB of weights. Scoring forms logits only at
//! the output positions ([`Llama::hidden`], then [`Llama::logits`]), so `t` in the last
//! term is the output's length, not the prompt's: a 1,536-token prompt with a
//! 512-token answer needs 250 MiB of logits, not 1 GiB.

use std::path::Path;

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// The fields of a Hugging Face `config.json` that the forward pass needs; the rest of
/// the file is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention; absent means one key/value head per query head.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama 3.1's long-context frequency scaling (`rope_type = "llama3"`).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Rotary inverse frequencies, with Llama 3.1's scaling where configured.
    fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim();
        let base: Vec<f64> = (0..d)
            .step_by(2)
            .map(|i| 1.0 / self.rope_theta.powf(i as f64 / d as f64))
            .collect();
        let Some(s) = self
            .rope_scaling
            .as_ref()
            .filter(|s| s.rope_type == "llama3")
        else {
            return base.into_iter().map(|f| f as f32).collect();
        };
        let old = s.original_max_position_embeddings as f64;
        let (low_wavelen, high_wavelen) = (old / s.low_freq_factor, old / s.high_freq_factor);
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let scaled = if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                };
                scaled as f32
            })
            .collect()
    }
}

/// The numerical path of a forward pass, so that the reference can run at the
/// precision the miners run (vLLM `--dtype half` on the network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numerics {
    /// Weights and activations.
    #[serde(with = "dtype_name")]
    pub dtype: DType,
    /// Where `softmax(QKᵀ/√d)` is computed: `f32` (as vLLM's kernels accumulate) or
    /// `model` (in `dtype`, as a naive half-precision implementation would).
    pub attention: AttentionPrecision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionPrecision {
    F32,
    Model,
}

impl Numerics {
    /// From the settings' names: `f32`/`f16`/`bf16` and `f32`/`model`.
    pub fn parse(dtype: &str, attention: &str) -> std::result::Result<Self, String> {
        let table = format!("dtype = {dtype:?}\nattention = {attention:?}");
        toml::from_str(&table).map_err(|e| e.message().to_owned())
    }
}

impl Default for Numerics {
    fn default() -> Self {
        Numerics {
            dtype: DType::F32,
            attention: AttentionPrecision::F32,
        }
    }
}

mod dtype_name {
    use candle_core::DType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &DType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    pub fn deserialize<'de, De: Deserializer<'de>>(d: De) -> Result<DType, De::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "half" | "float16" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            other => Err(serde::de::Error::custom(format!(
                "dtype {other:?}: expected f32, f16 or bf16"
            ))),
        }
    }
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    attn_norm: Tensor,
    mlp_norm: Tensor,
}

/// A loaded model. `forward` is deterministic for a given device, dtype and batch.
pub struct Llama {
    pub config: LlamaConfig,
    pub numerics: Numerics,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    /// Use candle's differentiable (unfused) norm and rotary ops: for training.
    differentiable: bool,
}

fn linear(vb: &VarBuilder, rows: usize, cols: usize, name: &str) -> Result<Linear> {
    Ok(Linear::new(vb.get((rows, cols), name)?, None))
}

impl Llama {
    /// Builds the model from weights in `vb` (any source: safetensors, a training
    /// `VarMap`, modified tensors).
    pub fn new(
        vb: VarBuilder,
        config: LlamaConfig,
        numerics: Numerics,
        differentiable: bool,
    ) -> Result<Self> {
        let c = &config;
        let (h, kv) = (c.hidden_size, c.kv_heads() * c.head_dim());
        let embed_w = vb.get((c.vocab_size, h), "model.embed_tokens.weight")?;
        let embed = Embedding::new(embed_w.clone(), h);
        let lm_head = if c.tie_word_embeddings {
            Linear::new(embed_w, None)
        } else {
            linear(&vb, c.vocab_size, h, "lm_head.weight")?
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("model.layers.{i}"));
                Ok(Layer {
                    q: linear(&l, h, h, "self_attn.q_proj.weight")?,
                    k: linear(&l, kv, h, "self_attn.k_proj.weight")?,
                    v: linear(&l, kv, h, "self_attn.v_proj.weight")?,
                    o: linear(&l, h, h, "self_attn.o_proj.weight")?,
                    gate: linear(&l, c.intermediate_size, h, "mlp.gate_proj.weight")?,
                    up: linear(&l, c.intermediate_size, h, "mlp.up_proj.weight")?,
                    down: linear(&l, h, c.intermediate_size, "mlp.down_proj.weight")?,
                    attn_norm: l.get(h, "input_layernorm.weight")?,
                    mlp_norm: l.get(h, "post_attention_layernorm.weight")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = vb.get(h, "model.norm.weight")?;
        let inv_freq = c.inv_freq();
        let device = vb.device();
        let inv_freq = Tensor::from_vec(inv_freq.clone(), (1, inv_freq.len()), device)?;
        let positions = Tensor::arange(0u32, c.max_position_embeddings as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((c.max_position_embeddings, 1))?;
        let freqs = positions.matmul(&inv_freq)?;
        let cos = freqs.cos()?.to_dtype(numerics.dtype)?;
        let sin = freqs.sin()?.to_dtype(numerics.dtype)?;
        Ok(Llama {
            config,
            numerics,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            differentiable,
        })
    }

    /// Loads `config.json` and every `*.safetensors` file of a model folder.
    pub fn load(dir: &Path, numerics: Numerics, device: &Device) -> anyhow::Result<Self> {
        Self::load_with(dir, numerics, device, |_, t| Ok(t))
    }

    /// Like [`Llama::load`], passing each weight tensor through `transform` (by name)
    /// first: for simulating miners whose weights differ from the reference's.
    pub fn load_with(
        dir: &Path,
        numerics: Numerics,
        device: &Device,
        transform: impl Fn(&str, Tensor) -> Result<Tensor>,
    ) -> anyhow::Result<Self> {
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            anyhow::bail!("{}: no *.safetensors weights", dir.display());
        }
        let mut tensors = std::collections::HashMap::new();
        for f in &files {
            for (name, t) in candle_core::safetensors::load(f, device)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
            {
                let t = transform(&name, t)?;
                tensors.insert(name, t);
            }
        }
        let vb = VarBuilder::from_tensors(tensors, numerics.dtype, device);
        Ok(Llama::new(vb, config, numerics, false)?)
    }

    pub fn device(&self) -> &Device {
        self.norm.device()
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps as f32;
        if self.differentiable {
            candle_nn::ops::rms_norm_slow(x, w, eps)
        } else {
            candle_nn::ops::rms_norm(x, w, eps)
        }
    }

    /// Rotary embedding of `t` positions starting at `past`.
    fn rope(&self, x: &Tensor, past: usize, t: usize) -> Result<Tensor> {
        let (cos, sin) = (self.cos.narrow(0, past, t)?, self.sin.narrow(0, past, t)?);
        if self.differentiable {
            candle_nn::rotary_emb::rope_slow(x, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
        }
    }

    /// Logits (f32) at every position of every sequence: `tokens` is `[batch, len]`
    /// (u32), the result `[batch, len, vocab]`. Attention is causal, so a sequence
    /// padded on the right gets the same logits at its real positions as alone.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        self.logits(&self.hidden(tokens)?)
    }

    /// The final hidden states, `[batch, len, hidden]`, normalized: what the logits
    /// are computed from. Scoring takes the positions it needs from these, so the
    /// `vocab`-wide logits of a long prompt are never formed.
    pub fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        self.layers_over(tokens, None)
    }

    /// [`Llama::hidden`] of `tokens` following the positions `cache` holds, whose keys
    /// and values are kept instead of recomputed; `tokens`' own are added to it. This
    /// is how a serving engine generates (one new token a step): the baseline that
    /// scoring's speed is measured against (`examples/bench_scoring.rs`). Scoring itself
    /// sees the whole sequence at once and keeps no cache.
    pub fn hidden_cached(&self, tokens: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.layers_over(tokens, Some(cache))
    }

    fn layers_over(&self, tokens: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.len);
        if past + t > self.config.max_position_embeddings {
            candle_core::bail!(
                "{} tokens exceed the model's {} positions",
                past + t,
                self.config.max_position_embeddings
            );
        }
        let c = &self.config;
        let (heads, kv_heads, d) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let att_dtype = match self.numerics.attention {
            AttentionPrecision::F32 => DType::F32,
            AttentionPrecision::Model => self.numerics.dtype,
        };
        let mask = causal_mask(past, t, self.device())?.to_dtype(att_dtype)?;
        let mut x = self.embed.forward(tokens)?;
        for (i, l) in self.layers.iter().enumerate() {
            let h = self.rms_norm(&x, &l.attn_norm)?;
            let split = |y: Tensor, n: usize| y.reshape((b, t, n, d))?.transpose(1, 2);
            let q = self.rope(&split(l.q.forward(&h)?, heads)?, past, t)?;
            let mut k = self.rope(&split(l.k.forward(&h)?, kv_heads)?, past, t)?;
            let mut v = split(l.v.forward(&h)?, kv_heads)?;
            if let Some(cache) = cache.as_deref_mut() {
                (k, v) = cache.extend(i, k, v)?;
            }
            let y = self.attend(&q, k, v, Some(&mask), att_dtype)?;
            x = self.mlp_block(l, (x + l.o.forward(&y.reshape((b, t, heads * d))?)?)?)?;
        }
        if let Some(cache) = cache {
            cache.len = past + t;
        }
        self.rms_norm(&x, &self.norm)
    }

    /// One decoding step of several sequences at once, as a serving engine batches
    /// them: `tokens[s]` follows the positions `caches[s]` holds (their lengths may
    /// differ). The projections and the MLP run on all `b` tokens together (matrix
    /// products `b` rows tall, the batch size's effect on an engine's arithmetic);
    /// attention runs per sequence over its own cache. The result is `[b, 1, hidden]`,
    /// normalized, and each cache grows by its token.
    pub fn hidden_step(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let b = tokens.len();
        if caches.len() != b || b == 0 {
            candle_core::bail!("{} tokens for {} caches", b, caches.len());
        }
        if let Some(c) = caches
            .iter()
            .find(|c| c.len + 1 > self.config.max_position_embeddings)
        {
            candle_core::bail!(
                "{} tokens exceed the model's {} positions",
                c.len + 1,
                self.config.max_position_embeddings
            );
        }
        let c = &self.config;
        let (heads, kv_heads, d) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let att_dtype = match self.numerics.attention {
            AttentionPrecision::F32 => DType::F32,
            AttentionPrecision::Model => self.numerics.dtype,
        };
        let tokens = Tensor::new(tokens, self.device())?.unsqueeze(1)?;
        let mut x = self.embed.forward(&tokens)?;
        for (i, l) in self.layers.iter().enumerate() {
            let h = self.rms_norm(&x, &l.attn_norm)?;
            let (q_all, k_all, v_all) = (l.q.forward(&h)?, l.k.forward(&h)?, l.v.forward(&h)?);
            let mut ys = Vec::with_capacity(b);
            for (s, cache) in caches.iter_mut().enumerate() {
                let past = cache.len;
                let split = |y: &Tensor, n: usize| {
                    y.narrow(0, s, 1)?.reshape((1, 1, n, d))?.transpose(1, 2)
                };
                let q = self.rope(&split(&q_all, heads)?, past, 1)?;
                let mut k = self.rope(&split(&k_all, kv_heads)?, past, 1)?;
                let mut v = split(&v_all, kv_heads)?;
                (k, v) = cache.extend(i, k, v)?;
                // One new position sees every cached one: no mask.
                ys.push(
                    self.attend(&q, k, v, None, att_dtype)?
                        .reshape((1, 1, heads * d))?,
                );
            }
            let y = Tensor::cat(&ys, 0)?;
            x = self.mlp_block(l, (x + l.o.forward(&y)?)?)?;
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        self.rms_norm(&x, &self.norm)
    }

    /// Attention of queries `q` (`[b, heads, t, d]`) over keys and values (`[b,
    /// kv_heads, past + t, d]`), scores in `att_dtype` plus `mask`: `[b, t, heads, d]`.
    fn attend(
        &self,
        q: &Tensor,
        k: Tensor,
        v: Tensor,
        mask: Option<&Tensor>,
        att_dtype: DType,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (heads, kv_heads, d) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let (k, v) = (
            repeat_kv(k, heads / kv_heads)?,
            repeat_kv(v, heads / kv_heads)?,
        );
        let mut scores = (q
            .to_dtype(att_dtype)?
            .contiguous()?
            .matmul(&k.to_dtype(att_dtype)?.t()?.contiguous()?)?
            / (d as f64).sqrt())?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        probs.matmul(&v.contiguous()?)?.transpose(1, 2)
    }

    /// `x` plus layer `l`'s MLP of it.
    fn mlp_block(&self, l: &Layer, x: Tensor) -> Result<Tensor> {
        let h = self.rms_norm(&x, &l.mlp_norm)?;
        let mlp = l
            .down
            .forward(&(candle_nn::ops::silu(&l.gate.forward(&h)?)? * l.up.forward(&h)?)?)?;
        x + mlp
    }

    /// Logits (f32) of hidden states from [`Llama::hidden`], any leading shape.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)?.to_dtype(DType::F32)
    }

    /// Log-probabilities (f32, `[batch, len, vocab]`) at every position.
    pub fn log_probs(&self, tokens: &Tensor) -> Result<Tensor> {
        candle_nn::ops::log_softmax(&self.forward(tokens)?, D::Minus1)
    }
}

/// `[t, past + t]`: row `i` (position `past + i`) sees every position up to its own:
/// 0 there, −∞ after.
fn causal_mask(past: usize, t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..past + t).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect();
    Tensor::from_vec(mask, (t, past + t), device)
}

/// The keys and values of the positions a generator has run, per layer
/// ([`Llama::hidden_cached`]).
#[derive(Default)]
pub struct KvCache {
    kv: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// Layer `i`'s cached keys and values with `k` and `v` appended, kept for the next
    /// step and returned.
    fn extend(&mut self, i: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.kv.get(i) {
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            None => (k, v),
        };
        if self.kv.len() > i {
            self.kv[i] = (k.clone(), v.clone());
        } else {
            self.kv.push((k.clone(), v.clone()));
        }
        Ok((k, v))
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Grouped-query attention: each key/value head serves `n` query heads.
fn repeat_kv(x: Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x);
    }
    let (b, kv, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, kv, n, t, d))?
        .reshape((b, kv * n, t, d))
}

/// Round-trips a weight matrix through symmetric per-row integer quantization with
/// `bits` bits (GPTQ-like storage without its error correction): what a miner serving a
/// quantized model instead of the reference computes with. Vectors (norms) are kept.
pub fn quantize_rows(t: Tensor, bits: u32) -> Result<Tensor> {
    if t.rank() != 2 {
        return Ok(t);
    }
    let dtype = t.dtype();
    let t = t.to_dtype(DType::F32)?;
    let levels = f64::from((1u32 << (bits - 1)) - 1);
    let scale = (t.abs()?.max_keepdim(1)? / levels)?.clamp(1e-12f32, f32::MAX)?;
    t.broadcast_div(&scale)?
        .round()?
        .broadcast_mul(&scale)?
        .to_dtype(dtype)
}
