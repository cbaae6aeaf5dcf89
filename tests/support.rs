//! Helpers shared by the end-to-end tests: the real models from the
//! catalog, fetched into the user's cache on first use.

use std::path::PathBuf;

use triage_models::{Catalog, ModelFiles, ModelStore};

/// The verified files of a catalog model in the default cache.
pub fn model(name: &str) -> ModelFiles {
    let catalog = Catalog::builtin();
    ModelStore::from_env()
        .ensure(catalog.get(name).expect("model in the built-in catalog"))
        .unwrap_or_else(|e| panic!("{name} must be fetchable: {e}"))
}

/// A file under `tests/data/`.
pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}
