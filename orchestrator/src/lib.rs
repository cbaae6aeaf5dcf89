//! The triage controller: the shared context every command starts from
//! (model catalog, model cache, loaded models), the router, and (growing
//! here, see DESIGN.md) the registry, dispatch, cascade, store, workflows
//! and gateway.

pub mod controller;
pub mod dispatch;
pub mod gateway;
pub mod probe;
pub mod registry;
pub mod router;
pub mod store;
pub mod workflow;

use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use triage_agents::AgentSpec;
use triage_models::{Catalog, MINILM, ModelFiles, ModelStore, SMOLLM2};
use triage_runtime::{EmbedHandle, EmbeddingCache, LlmHandle};

use crate::controller::Controller;
use crate::registry::Registry;
use crate::router::{Router, RouterConfig};
use crate::store::SledStore;

/// Where the controller's parts come from (flags and environment).
#[derive(Debug, Clone, Default)]
pub struct ControllerOptions {
    /// Folder of agent specs instead of the built-in ones.
    pub specs: Option<std::path::PathBuf>,
    /// User registry merged over specs/registry.toml.
    pub registry: Option<std::path::PathBuf>,
    /// Router configuration instead of specs/router.toml.
    pub router: Option<std::path::PathBuf>,
    /// Ask the small model when routing is not conclusive.
    pub slm: bool,
}

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

    /// The on-disk cache of MiniLM embeddings under `$TRIAGE_HOME`, keyed
    /// by the hashes of the encoder's files.
    pub fn embedding_cache(&self) -> anyhow::Result<EmbeddingCache> {
        let spec = self.catalog.get(MINILM)?;
        let ids: Vec<&str> = spec.files.iter().map(|f| f.sha256.as_str()).collect();
        let key = format!("minilm-{}", &hex::encode(Sha256::digest(ids.join(",")))[..16]);
        Ok(EmbeddingCache::open(&EmbeddingCache::path_in(
            self.store.home(),
            &key,
        )))
    }

    /// The sentence-embedding model (MiniLM), loaded once per process.
    pub fn embedder(&self) -> anyhow::Result<EmbedHandle> {
        let files = self.model_files(MINILM)?;
        EmbedHandle::shared(&files.dir).with_context(|| format!("loading {MINILM}"))
    }

    /// The specialist specs: those in `dir`, or the built-in ones.
    pub fn specs(&self, dir: Option<&Path>) -> anyhow::Result<Vec<AgentSpec>> {
        Ok(match dir {
            Some(dir) => triage_agents::load_dir(dir, &self.catalog)?,
            None => triage_agents::builtin(&self.catalog)?,
        })
    }

    /// The router over `specs`, its example embeddings cached under
    /// `$TRIAGE_HOME`; with `slm`, the small model is asked when the
    /// similarity is not conclusive.
    pub async fn router(
        &self,
        specs: &[AgentSpec],
        config: RouterConfig,
        slm: bool,
    ) -> anyhow::Result<Router> {
        let embedder = self.embedder()?;
        let mut cache = self.embedding_cache()?;
        let loader: Option<router::SlmLoader> = if slm {
            let ctx = self.clone();
            Some(Box::new(move || ctx.llm()))
        } else {
            None
        };
        Router::new(specs, config, embedder, &mut cache, loader).await
    }

    /// The controller: specs, router, registry and the store under
    /// `$TRIAGE_HOME`.
    pub async fn controller(&self, options: &ControllerOptions) -> anyhow::Result<Controller> {
        let (specs, registry) = self.registry(options)?;
        let config = match &options.router {
            Some(p) => RouterConfig::load(p)?,
            None => RouterConfig::builtin(),
        };
        let router = self.router(&specs, config, options.slm).await?;
        Ok(Controller {
            router,
            registry,
            store: std::sync::Arc::new(self.controller_store()),
            specs,
        })
    }

    /// The specs and the registry of agents alone (no models loaded).
    pub fn registry(&self, options: &ControllerOptions) -> anyhow::Result<(Vec<AgentSpec>, Registry)> {
        let specs = self.specs(options.specs.as_deref())?;
        let registry_path = registry::user_registry_path(options.registry.as_deref(), self.store.home());
        let registry = Registry::load(registry_path.as_deref(), &specs)?;
        Ok((specs, registry))
    }

    /// The controller's store: `$TRIAGE_STORE`, else `$TRIAGE_HOME/store`.
    pub fn controller_store(&self) -> SledStore {
        SledStore::at_home(self.store.home())
    }
}

/// The value at fraction `q` (0 to 1) of `sorted` values (0 when empty):
/// the percentiles every report and bench prints.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => sorted[((n as f64 * q) as usize).min(n - 1)],
    }
}
