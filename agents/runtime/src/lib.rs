//! Inference for triage's small models, on candle.
//!
//! - [`LlmHandle`]: a quantized llama model (GGUF) on its own worker
//!   thread: chat-templated prompts, greedy or seeded sampling, stop
//!   sequences, streaming, per-token log-probabilities and label scoring.
//! - [`EmbedHandle`]: MiniLM sentence embeddings, batched, and
//!   [`EmbeddingCache`], which keeps them on disk.
//!
//! Each loaded model is an actor: one thread owns it and serves requests
//! one at a time from a channel; handles are cheap clones.

mod actor;
mod chat;
pub mod cpu;
mod embed;
mod embed_cache;
mod engine;
mod error;
mod llama;
mod prefix;
mod stream;
mod tokenizer;

pub use actor::{Actor, LlmHandle, StreamEvent};
pub use chat::{ChatTemplate, Message};
pub use embed::{EmbedHandle, Embedder, MAX_TOKENS as EMBED_MAX_TOKENS, cosine};
pub use embed_cache::EmbeddingCache;
pub use engine::{
    Decoder, Engine, FinishReason, GenerateParams, Generation, GenerationEvent, GenerationStats, LabelScore,
    LoadOptions, ModelInfo, Prompt, TokenEvent, default_threads,
};
pub use error::Error;
pub use llama::{Chunk, KvCache, Llama, LlamaConfig, Logits};
pub use stream::Utf8Stream;
pub use tokenizer::Tokenizer;
