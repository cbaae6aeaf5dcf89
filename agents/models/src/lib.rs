//! The model catalog and the local model cache.
//!
//! [`Catalog`] reads `specs/models.toml`: each model's name, version,
//! architecture, licence, files (with size and sha256) and the sources they
//! can come from. [`ModelStore`] keeps the files under
//! `$TRIAGE_HOME/models/NAME/VERSION/`, fetches what is missing on first use
//! (with a progress indicator), and verifies every file by its sha256 before
//! it is handed out, so a corrupt or truncated file is refetched, never
//! loaded.
//!
//! ```no_run
//! use triage_models::{Catalog, ModelStore};
//! let catalog = Catalog::builtin();
//! let store = ModelStore::from_env();
//! let files = store.ensure(catalog.get("smollm2-135m-instruct")?)?;
//! println!("{}", files.path("SmolLM2-135M-Instruct.Q4_1.gguf").display());
//! # Ok::<(), triage_models::Error>(())
//! ```

mod catalog;
mod error;
mod store;

pub use catalog::{Catalog, FileSpec, ModelSpec, Source};
pub use error::Error;
pub use store::{FileState, FileStatus, ModelFiles, ModelStore};

/// Name of the built-in generation model (the specialists' base).
pub const SMOLLM2: &str = "smollm2-135m-instruct";
/// Name of the built-in sentence-embedding model (the router's encoder).
pub const MINILM: &str = "all-minilm-l6-v2";
