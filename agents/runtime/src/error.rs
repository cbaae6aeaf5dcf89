use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The model file could not be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The model file is not what the runtime can load.
    #[error("cannot load {path}: {message}")]
    Format { path: PathBuf, message: String },
    /// The tokenizer failed on some input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// The prompt does not fit in the model's context window.
    #[error(
        "the prompt is {prompt_tokens} tokens but the model's context holds {context} (with room for at least one generated token); shorten the prompt"
    )]
    PromptTooLong { prompt_tokens: usize, context: usize },
    /// The prompt and the longest candidate of label scoring do not fit.
    #[error(
        "label scoring needs the prompt ({prompt_tokens} tokens) and the longest candidate ({candidate_tokens} tokens) to fit in the model's context of {context}; shorten the prompt"
    )]
    ScoringTooLong {
        prompt_tokens: usize,
        candidate_tokens: usize,
        context: usize,
    },
    /// A request panicked inside the model worker; the worker goes on serving.
    #[error(
        "the request failed inside the model worker `{0}` (a bug: please report it); the model keeps serving"
    )]
    RequestPanicked(String),
    /// Request parameters out of range.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The model's worker thread is gone (it panicked or was shut down).
    #[error("the model worker `{0}` has stopped")]
    WorkerGone(String),
}

impl Error {
    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Error {
        Error::Tokenizer(e.to_string())
    }
}
