//! A llama-architecture transformer over GGUF quantized weights, on candle
//! tensors.
//!
//! This is the project's own model rather than candle-transformers'
//! `quantized_llama` because the runtime needs three things that one does
//! not expose: logits for every position (label scoring), a KV cache that
//! can be cut back to a prefix (several continuations scored after one
//! prompt pass, and later prefix caching), and a token embedding that stays
//! quantized instead of being expanded to f32.

use std::path::Path;

use candle_core::quantized::{QMatMul, gguf_file};
use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use crate::Error;

/// Shape and hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    /// Context window the model was trained for.
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
}

/// Which positions to compute logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation; saves the vocabulary projection
    /// for every prompt token).
    Last,
    /// Every position of the input (label scoring).
    All,
}

#[derive(Debug)]
struct Layer {
    attn_norm: RmsNorm,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: RmsNorm,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
    cache: Option<(Tensor, Tensor)>,
}

/// The model with its KV cache.
#[derive(Debug)]
pub struct Llama {
    config: LlamaConfig,
    embed: QMatMul,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    /// Tokens currently held in the KV cache.
    cached: usize,
    device: Device,
    span: tracing::Span,
}

impl Llama {
    /// Loads the weights named in `content` from `reader`. `max_context`
    /// caps the context (and the size of the rotary tables) below what the
    /// model was trained for.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        path: &Path,
        max_context: Option<usize>,
    ) -> Result<Llama, Error> {
        let format_err = |message: String| Error::Format {
            path: path.to_path_buf(),
            message,
        };
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(format_err(format!(
                "architecture `{arch}` is not supported (this runtime runs `llama` GGUF models)"
            )));
        }
        let md_u32 = |key: &str| -> Result<usize, Error> {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .ok_or_else(|| format_err(format!("metadata `{key}` is missing")))
        };
        let n_embd = md_u32("llama.embedding_length")?;
        let n_head = md_u32("llama.attention.head_count")?;
        let n_kv_head = md_u32("llama.attention.head_count_kv").unwrap_or(n_head);
        let trained_context = md_u32("llama.context_length")?;
        let context_length = max_context.map_or(trained_context, |m| m.min(trained_context));
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 || n_embd % n_head != 0 {
            return Err(format_err(format!(
                "inconsistent attention shape: {n_head} heads, {n_kv_head} key/value heads, embedding {n_embd}"
            )));
        }
        let head_dim = n_embd / n_head;
        let rope_theta = content
            .metadata
            .get("llama.rope.freq_base")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(10_000.0);
        let rms_eps = content
            .metadata
            .get("llama.attention.layer_norm_rms_epsilon")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1e-5) as f64;
        let device = Device::Cpu;
        let mut tensor = |name: &str| {
            content
                .tensor(reader, name, &device)
                .map_err(|e| format_err(format!("tensor `{name}`: {e}")))
        };
        // The token embedding stays quantized; rows are dequantized as looked up.
        let embed_q = std::sync::Arc::new(tensor("token_embd.weight")?);
        let (vocab_size, _) = embed_q.shape().dims2()?;
        let norm = RmsNorm::from_qtensor(tensor("output_norm.weight")?, rms_eps)?;
        let has_output = content.tensor_infos.contains_key("output.weight");
        let output = if has_output {
            QMatMul::from_qtensor(tensor("output.weight")?)?
        } else {
            // Tied embeddings (SmolLM2): the output projection is the same
            // matrix, shared rather than loaded twice.
            QMatMul::from_arc(embed_q.clone())?
        };
        let embed = QMatMul::from_arc(embed_q)?;
        let n_layer = md_u32("llama.block_count")?;
        let mut layers = Vec::with_capacity(n_layer);
        let mut n_ff = 0;
        for i in 0..n_layer {
            let mut q = |w: &str| -> Result<QMatMul, Error> {
                Ok(QMatMul::from_qtensor(tensor(&format!("blk.{i}.{w}.weight"))?)?)
            };
            let w_up = q("ffn_up")?;
            if let QMatMul::QTensor(t) = &w_up {
                n_ff = t.shape().dims2()?.0;
            }
            layers.push(Layer {
                wq: q("attn_q")?,
                wk: q("attn_k")?,
                wv: q("attn_v")?,
                wo: q("attn_output")?,
                w_gate: q("ffn_gate")?,
                w_up,
                w_down: q("ffn_down")?,
                attn_norm: RmsNorm::from_qtensor(tensor(&format!("blk.{i}.attn_norm.weight"))?, rms_eps)?,
                ffn_norm: RmsNorm::from_qtensor(tensor(&format!("blk.{i}.ffn_norm.weight"))?, rms_eps)?,
                cache: None,
            });
        }
        let (cos, sin) = rope_tables(head_dim, rope_theta, context_length, &device)?;
        Ok(Llama {
            config: LlamaConfig {
                n_layer,
                n_embd,
                n_head,
                n_kv_head,
                head_dim,
                n_ff,
                vocab_size,
                context_length,
                rope_theta,
                rms_eps,
            },
            embed,
            layers,
            norm,
            output,
            cos,
            sin,
            cached: 0,
            device,
            span: tracing::trace_span!("llama"),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Number of tokens in the KV cache (the position of the next token).
    pub fn cached_len(&self) -> usize {
        self.cached
    }

    /// Cuts the KV cache back to its first `len` tokens.
    pub fn truncate_cache(&mut self, len: usize) -> Result<(), Error> {
        if len >= self.cached {
            return Ok(());
        }
        self.truncate_layers(len)?;
        self.cached = len;
        Ok(())
    }

    fn truncate_layers(&mut self, len: usize) -> Result<(), Error> {
        for layer in &mut self.layers {
            if let Some((k, v)) = &layer.cache {
                if len == 0 {
                    layer.cache = None;
                } else if k.dim(2)? > len {
                    layer.cache = Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?));
                }
            }
        }
        Ok(())
    }

    /// Empties the KV cache.
    pub fn clear_cache(&mut self) {
        for layer in &mut self.layers {
            layer.cache = None;
        }
        self.cached = 0;
    }

    /// Runs `tokens` after what the cache holds and returns logits of shape
    /// `(n, vocab)`: `n` is 1 for [`Logits::Last`], `tokens.len()` for
    /// [`Logits::All`].
    pub fn forward(&mut self, tokens: &[u32], want: Logits) -> Result<Tensor, Error> {
        let result = self.forward_inner(tokens, want);
        if result.is_err() {
            // Earlier layers may have grown their caches already.
            let cached = self.cached;
            self.truncate_layers(cached)?;
        }
        result
    }

    fn forward_inner(&mut self, tokens: &[u32], want: Logits) -> Result<Tensor, Error> {
        let _enter = self.span.enter();
        let seq = tokens.len();
        if seq == 0 {
            return Err(Error::InvalidRequest("forward needs at least one token".into()));
        }
        let pos = self.cached;
        if pos + seq > self.config.context_length {
            return Err(Error::PromptTooLong {
                prompt_tokens: pos + seq,
                context: self.config.context_length,
            });
        }
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let mut x = self.embed.embedding(&ids)?;
        let mask = if seq > 1 {
            Some(causal_mask(seq, pos, &self.device)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let c = &self.config;
        for layer in &mut self.layers {
            let h = layer.attn_norm.forward(&x)?;
            let attn = attention(layer, &h, mask.as_ref(), &cos, &sin, c)?;
            x = (x + attn)?;
            let h = layer.ffn_norm.forward(&x)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let ff = layer.w_down.forward(&(gate * layer.w_up.forward(&h)?)?)?;
            x = (x + ff)?;
        }
        let x = match want {
            Logits::Last => x.i((.., seq - 1..seq, ..))?,
            Logits::All => x,
        };
        let x = self.norm.forward(&x)?;
        let logits = self.output.forward(&x)?.squeeze(0)?.to_dtype(DType::F32)?;
        self.cached += seq;
        Ok(logits)
    }
}

fn attention(
    layer: &mut Layer,
    h: &Tensor,
    mask: Option<&Tensor>,
    cos: &Tensor,
    sin: &Tensor,
    c: &LlamaConfig,
) -> Result<Tensor, Error> {
    let (b, seq, _) = h.dims3()?;
    let q = layer
        .wq
        .forward(h)?
        .reshape((b, seq, c.n_head, c.head_dim))?
        .transpose(1, 2)?
        .contiguous()?;
    let k = layer
        .wk
        .forward(h)?
        .reshape((b, seq, c.n_kv_head, c.head_dim))?
        .transpose(1, 2)?
        .contiguous()?;
    let v = layer
        .wv
        .forward(h)?
        .reshape((b, seq, c.n_kv_head, c.head_dim))?
        .transpose(1, 2)?
        .contiguous()?;
    // GGUF llama weights are permuted for the interleaved (GPT-J style) rotary layout.
    let q = candle_nn::rotary_emb::rope_i(&q, cos, sin)?;
    let k = candle_nn::rotary_emb::rope_i(&k, cos, sin)?;
    // Keys and values are rounded to f16 as llama.cpp's f16 KV cache rounds
    // them (greedy outputs agree with llama.cpp's more often than in plain
    // f32), but stored as f32 so that no step converts the whole cache.
    let k = round_f16(&k)?;
    let v = round_f16(&v)?;
    let (k, v) = match &layer.cache {
        Some((kc, vc)) => (Tensor::cat(&[kc, &k], 2)?, Tensor::cat(&[vc, &v], 2)?),
        None => (k, v),
    };
    layer.cache = Some((k.clone(), v.clone()));
    let n_rep = c.n_head / c.n_kv_head;
    let k = candle_transformers::utils::repeat_kv(k, n_rep)?.contiguous()?;
    let v = candle_transformers::utils::repeat_kv(v, n_rep)?.contiguous()?;
    // ggml multiplies an f16 matrix by activations rounded to f16.
    let q = round_f16(&q)?;
    let scale = 1.0 / (c.head_dim as f64).sqrt();
    let att = (q.matmul(&k.t()?)? * scale)?;
    let att = match mask {
        Some(m) => att.broadcast_add(m)?,
        None => att,
    };
    let att = round_f16(&candle_nn::ops::softmax_last_dim(&att)?)?;
    let y = att.matmul(&v)?;
    let y = y.transpose(1, 2)?.reshape((b, seq, c.n_head * c.head_dim))?;
    Ok(layer.wo.forward(&y)?)
}

fn round_f16(t: &Tensor) -> Result<Tensor, Error> {
    Ok(t.to_dtype(DType::F16)?.to_dtype(DType::F32)?)
}

/// Additive mask `(seq, pos + seq)`: 0 where a query may attend, -inf
/// where the key lies in its future.
fn causal_mask(seq: usize, pos: usize, device: &Device) -> Result<Tensor, Error> {
    let kv = pos + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..kv).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, kv), device)?)
}

fn rope_tables(head_dim: usize, theta: f32, len: usize, device: &Device) -> Result<(Tensor, Tensor), Error> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / theta.powf(i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::new(inv.as_slice(), device)?;
    let positions = Tensor::arange(0u32, len as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((len, 1))?;
    let freqs = positions.broadcast_mul(&inv.reshape((1, head_dim / 2))?)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// `log_softmax` of one row of logits, as a plain vector.
pub(crate) fn log_softmax(logits: &Tensor) -> Result<Vec<f32>, Error> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_lets_each_query_see_the_prefix_and_its_past() {
        let m = causal_mask(2, 3, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0][..4], [0.0; 4]);
        assert_eq!(m[0][4], f32::NEG_INFINITY);
        assert_eq!(m[1], [0.0; 5]);
    }
}
