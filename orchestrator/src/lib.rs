//! The triage controller. For now: the shared context every command starts
//! from (model catalog, model cache, loaded models). The registry, router,
//! dispatch, workflows, store and gateway grow here (see DESIGN.md).

use std::path::Path;

use anyhow::Context as _;
use triage_models::{Catalog, MINILM, ModelFiles, ModelStore, SMOLLM2};
use triage_runtime::{EmbedHandle, LlmHandle};

/// Catalog and model cache, as configured by flags and environment.
#[derive(Debug, Clone)]
pub struct Context {
    pub catalog: Catalog,
    pub store: ModelStore,
}

impl Context {
    /// The built-in catalog, or the one at `catalog` when given.
    pub fn new(catalog: Option<&Path>) -> anyhow::Result<Context> {
        let catalog = match catalog {
            Some(p) => Catalog::from_path(p)?,
            None => Catalog::builtin(),
        };
        Ok(Context {
            catalog,
            store: ModelStore::from_env(),
        })
    }

    /// The verified files of a model, fetched first if needed.
    pub fn model_files(&self, name: &str) -> anyhow::Result<ModelFiles> {
        Ok(self.store.ensure(self.catalog.get(name)?)?)
    }

    /// The generation model (SmolLM2), loaded once per process.
    pub fn llm(&self) -> anyhow::Result<LlmHandle> {
        self.llm_named(SMOLLM2)
    }

    /// A catalog generation model, fetched if needed and loaded once per process.
    pub fn llm_named(&self, name: &str) -> anyhow::Result<LlmHandle> {
        let files = self.model_files(name)?;
        LlmHandle::shared(&files.main_file()).with_context(|| format!("loading {name}"))
    }

    /// The sentence-embedding model (MiniLM), loaded once per process.
    pub fn embedder(&self) -> anyhow::Result<EmbedHandle> {
        let files = self.model_files(MINILM)?;
        EmbedHandle::shared(&files.dir).with_context(|| format!("loading {MINILM}"))
    }
}
