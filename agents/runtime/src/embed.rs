//! Sentence embeddings with all-MiniLM-L6-v2 (BERT): mean pooling over the
//! tokens, L2-normalised, batched with padding to the longest text.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

use crate::Error;
use crate::actor::{Actor, SharedHandles, shared_handle};

/// Longest input in tokens; sentence-transformers trained MiniLM at 256.
pub const MAX_TOKENS: usize = 256;

/// A BERT sentence encoder and its tokenizer.
pub struct Embedder {
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    dim: usize,
    device: Device,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from
    /// a folder.
    pub fn load(dir: &Path) -> Result<Embedder, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| Error::Io { path, source })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?).map_err(|e| Error::Format {
            path: dir.join("config.json"),
            message: e.to_string(),
        })?;
        let mut tokenizer =
            tokenizers::Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|e| Error::Format {
                path: dir.join("tokenizer.json"),
                message: e.to_string(),
            })?;
        // The shipped tokenizer.json pads every input to 128 tokens; pad a
        // batch only to its longest member instead.
        let pad_id = config.pad_token_id as u32;
        let pad_token = tokenizer.id_to_token(pad_id).unwrap_or_else(|| "[PAD]".into());
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(Error::tokenizer)?;
        let device = Device::Cpu;
        let weights_path = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&weights_path, &device).map_err(|e| Error::Format {
            path: weights_path.clone(),
            message: e.to_string(),
        })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(|e| Error::Format {
            path: weights_path,
            message: e.to_string(),
        })?;
        Ok(Embedder {
            model,
            tokenizer,
            dim: config.hidden_size,
            device,
        })
    }

    /// Embedding size (384 for MiniLM).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds a batch of texts; each vector has unit length.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(Error::tokenizer)?;
        let len = encodings[0].get_ids().len();
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let shape = (texts.len(), len);
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), shape, &self.device)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), shape, &self.device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), shape, &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean over the real tokens only.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norm)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

/// A handle to an [`Embedder`] on its own worker thread.
#[derive(Debug, Clone)]
pub struct EmbedHandle {
    actor: Actor<Embedder>,
    dim: usize,
}

impl EmbedHandle {
    /// Loads the model folder on a new worker thread.
    pub fn load(dir: &Path) -> Result<EmbedHandle, Error> {
        let d = dir.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let actor = Actor::spawn("minilm", move || {
            let e = Embedder::load(&d)?;
            let _ = tx.send(e.dim());
            Ok(e)
        })?;
        let dim = rx.recv().map_err(|_| Error::WorkerGone("minilm".into()))?;
        Ok(EmbedHandle { actor, dim })
    }

    /// The process-wide encoder in `dir`: loaded on first use, then shared
    /// by every caller, like [`crate::LlmHandle::shared`].
    pub fn shared(dir: &Path) -> Result<EmbedHandle, Error> {
        static LOADED: SharedHandles<EmbedHandle> = OnceLock::new();
        shared_handle(&LOADED, dir, EmbedHandle::load)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many tokens the encoder sees for `text` (special tokens
    /// included, before truncation).
    pub async fn token_count(&self, text: &str) -> Result<usize, Error> {
        let text = text.to_string();
        self.actor
            .call(move |e: &mut Embedder| {
                e.tokenizer
                    .encode(text.as_str(), true)
                    .map(|enc| enc.get_ids().len())
                    .map_err(|err| Error::Tokenizer(err.to_string()))
            })
            .await?
    }

    /// Embeds texts in batches of at most 64, grouped by length so that
    /// little of each batch is padding; the vectors come back in the
    /// order of `texts`.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        let texts = Arc::new(texts);
        self.actor
            .call(move |e: &mut Embedder| {
                let mut order: Vec<usize> = (0..texts.len()).collect();
                order.sort_by_key(|&i| texts[i].len());
                let refs: Vec<&str> = order.iter().map(|&i| texts[i].as_str()).collect();
                let mut out = vec![Vec::new(); texts.len()];
                let mut at = 0;
                for chunk in refs.chunks(64) {
                    for v in e.embed(chunk)? {
                        out[order[at]] = v;
                        at += 1;
                    }
                }
                Ok(out)
            })
            .await?
    }
}

/// Cosine similarity of two vectors (their dot product when both have unit length).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
