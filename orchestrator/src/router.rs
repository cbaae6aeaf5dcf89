//! The router: which specialist should answer a task.
//!
//! It is a label classifier ([`LabelClassifier`]) whose labels are the
//! specialists and whose examples are their example requests: the task's
//! MiniLM embedding is compared with each specialist's nearest examples,
//! and calibrated weights (`specs/router.toml`, fit on labelled data by
//! `triage eval router --fit`) turn the similarities into a probability per
//! specialist. When the winner's probability is below its spec's
//! `route_min_probability`, the small model is asked to choose by the
//! likelihood of each label, and the two are combined; below
//! `fallback_below` the task goes to the fallback specialist.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use triage_agents::{AgentSpec, Combine, LabelClassifier, LabelDef, LabelSet, Neighbour};
use triage_runtime::{EmbedHandle, EmbeddingCache, LlmHandle, Prompt};

pub mod fit;

pub use fit::{Calibration, fit_calibration};

const BUILTIN_CONFIG: &str = include_str!("../../specs/router.toml");

/// `specs/router.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The specialist that takes what nobody claims.
    pub fallback: String,
    /// How many nearest examples of each specialist are averaged.
    pub neighbours: usize,
    pub similarity_weight: f64,
    #[serde(default)]
    pub bias: BTreeMap<String, f64>,
    /// Share of the small model's vote when it is asked.
    pub slm_weight: f64,
    /// Below this probability the task goes to the fallback.
    pub fallback_below: f64,
    /// How the weights were fit.
    #[serde(default)]
    pub fit: Option<FitRecord>,
}

/// Where a calibration came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitRecord {
    pub data: String,
    pub items: usize,
    pub command: String,
    /// Mean negative log-likelihood on the fit data after fitting.
    #[serde(default)]
    pub nll: Option<f64>,
    /// Expected calibration error on the fit data after fitting.
    #[serde(default)]
    pub ece: Option<f64>,
}

impl RouterConfig {
    /// The shipped `specs/router.toml`.
    pub fn builtin() -> RouterConfig {
        RouterConfig::parse(BUILTIN_CONFIG, Path::new("specs/router.toml"))
            .expect("the shipped router config is valid")
    }

    /// Parses and checks a router config; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<RouterConfig> {
        let config: RouterConfig = toml::from_str(text).with_context(|| format!("{}", path.display()))?;
        if config.neighbours == 0 {
            bail!("{}: neighbours must be at least 1", path.display());
        }
        if !(0.0..=1.0).contains(&config.slm_weight) || !(0.0..=1.0).contains(&config.fallback_below) {
            bail!(
                "{}: slm_weight and fallback_below must be between 0 and 1",
                path.display()
            );
        }
        Ok(config)
    }

    /// Reads a router config file.
    pub fn load(path: &Path) -> anyhow::Result<RouterConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        RouterConfig::parse(&text, path)
    }

    fn check_agents(&self, specs: &[AgentSpec]) -> anyhow::Result<()> {
        let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        if !known.contains(&self.fallback.as_str()) {
            bail!(
                "the router's fallback `{}` is not a specialist; the specs define: {}",
                self.fallback,
                known.join(", ")
            );
        }
        if let Some(k) = self.bias.keys().find(|k| !known.contains(&k.as_str())) {
            bail!("the router's bias names `{k}`, which is not a specialist");
        }
        Ok(())
    }
}

/// How the router reached its decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteStage {
    /// Similarity to the example requests was confident enough.
    Similarity,
    /// The small model was asked too, and the two combined.
    Slm,
    /// Nobody was confident: the fallback specialist takes it.
    Fallback,
    /// The caller named the specialist (`--domain`).
    Forced,
}

/// One specialist's share of a routing decision.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    pub agent: String,
    /// Final probability (similarity, combined with the small model when it
    /// was asked).
    pub probability: f64,
    /// Probability from similarity alone (calibrated).
    pub similarity_probability: f64,
    /// Mean cosine similarity to the nearest examples.
    pub similarity: f64,
    /// The small model's probability, when it was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slm_probability: Option<f64>,
    /// The nearest example requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nearest: Vec<Neighbour>,
}

/// Where a task goes and why.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteDecision {
    /// The specialist chosen.
    pub agent: String,
    /// Its probability.
    pub probability: f64,
    pub stage: RouteStage,
    /// Every specialist, most probable first.
    pub candidates: Vec<Candidate>,
    pub latency_ms: f64,
}

/// The router, with the example requests embedded.
pub struct Router {
    config: RouterConfig,
    classifier: LabelClassifier,
    /// `route_min_probability` of each specialist.
    thresholds: BTreeMap<String, f64>,
    slm: OnceCell<LlmHandle>,
    /// The small model's label probabilities for a content-free task.
    slm_prior: OnceCell<BTreeMap<String, f64>>,
    slm_loader: Option<SlmLoader>,
}

/// Loads the small model the first time it is needed.
pub type SlmLoader = Box<dyn Fn() -> anyhow::Result<LlmHandle> + Send + Sync>;

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("agents", &self.thresholds.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Builds the router over `specs`, embedding their examples with
    /// `embedder` or taking the vectors from `cache`.
    pub async fn new(
        specs: &[AgentSpec],
        config: RouterConfig,
        embedder: EmbedHandle,
        cache: &mut EmbeddingCache,
        slm_loader: Option<SlmLoader>,
    ) -> anyhow::Result<Router> {
        config.check_agents(specs)?;
        let set = LabelSet {
            name: "route".into(),
            description: "the specialist that should answer a task".into(),
            combine: Combine {
                cue_weight: 0.0,
                similarity_weight: config.similarity_weight,
                neighbours: config.neighbours,
                bias: config.bias.clone(),
            },
            labels: specs
                .iter()
                .map(|s| LabelDef {
                    name: s.name.clone(),
                    description: s.description.clone(),
                    examples: s.examples.clone(),
                })
                .collect(),
        };
        let texts: Vec<String> = set.labels.iter().flat_map(|l| l.examples.clone()).collect();
        let vectors = cache.embed(&embedder, &texts).await?;
        let classifier = LabelClassifier::from_vectors(set, vectors, embedder, None);
        Ok(Router {
            thresholds: specs
                .iter()
                .map(|s| (s.name.clone(), s.thresholds.route_min_probability))
                .collect(),
            config,
            classifier,
            slm: OnceCell::new(),
            slm_prior: OnceCell::new(),
            slm_loader,
        })
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The specialists, in spec order.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.classifier.labels()
    }

    /// The similarity-only decision for each text: no small model, no
    /// fallback (for evaluation and calibration).
    pub async fn similarities(&self, texts: Vec<String>) -> anyhow::Result<Vec<triage_agents::Decision>> {
        Ok(self.classifier.classify(texts).await?)
    }

    /// Routes one task; `nearest` examples per candidate are listed.
    pub async fn route(&self, text: &str, nearest: usize) -> anyhow::Result<RouteDecision> {
        let start = Instant::now();
        let decision = self
            .classifier
            .classify_explained(vec![text.to_string()], nearest)
            .await?
            .pop()
            .context("the classifier returned no decision")?;
        let mut candidates: Vec<Candidate> = decision
            .scores
            .into_iter()
            .map(|s| Candidate {
                agent: s.label,
                probability: s.probability,
                similarity_probability: s.probability,
                similarity: s.similarity,
                slm_probability: None,
                nearest: s.nearest,
            })
            .collect();
        let mut stage = RouteStage::Similarity;
        let top = &candidates[0];
        let threshold = self.thresholds.get(&top.agent).copied().unwrap_or(0.0);
        if top.probability < threshold
            && self.config.slm_weight > 0.0
            && let Some(slm) = self.slm_scores(text).await?
        {
            let w = self.config.slm_weight;
            for c in &mut candidates {
                let p = slm.get(&c.agent).copied().unwrap_or(0.0);
                c.slm_probability = Some(round3(p));
                c.probability = round3((1.0 - w) * c.similarity_probability + w * p);
            }
            candidates.sort_by(|a, b| b.probability.total_cmp(&a.probability));
            stage = RouteStage::Slm;
        }
        let (agent, probability) = (candidates[0].agent.clone(), candidates[0].probability);
        let agent = if probability < self.config.fallback_below {
            stage = RouteStage::Fallback;
            self.config.fallback.clone()
        } else {
            agent
        };
        Ok(RouteDecision {
            agent,
            probability,
            stage,
            candidates,
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The small model's probability for each specialist, from the
    /// likelihood of its name as the answer; `None` when no small model is
    /// configured.
    ///
    /// A small model prefers some label words whatever the task, so the
    /// likelihoods are divided by those it gives a content-free task
    /// ("N/A") and renormalised (contextual calibration, Zhao et al. 2021,
    /// "Calibrate Before Use").
    async fn slm_scores(&self, text: &str) -> anyhow::Result<Option<BTreeMap<String, f64>>> {
        let Some(loader) = &self.slm_loader else {
            return Ok(None);
        };
        let llm = self.slm.get_or_try_init(|| async { loader() }).await?;
        let prior = self
            .slm_prior
            .get_or_try_init(|| self.slm_label_probabilities(llm, "N/A"))
            .await?;
        let raw = self.slm_label_probabilities(llm, text).await?;
        let adjusted: BTreeMap<String, f64> = raw
            .iter()
            .map(|(label, p)| {
                (
                    label.clone(),
                    p / prior.get(label).copied().unwrap_or(1.0).max(1e-6),
                )
            })
            .collect();
        let total: f64 = adjusted.values().sum();
        Ok(Some(adjusted.into_iter().map(|(l, p)| (l, p / total)).collect()))
    }

    async fn slm_label_probabilities(
        &self,
        llm: &LlmHandle,
        text: &str,
    ) -> anyhow::Result<BTreeMap<String, f64>> {
        let labels: Vec<String> = self.agents().map(str::to_string).collect();
        let task: String = text.chars().take(1200).collect();
        let question = format!(
            "Task: {task}\n\nWhich specialist should handle this task: {}? Answer with one word.",
            labels.join(", ")
        );
        let prompt = Prompt::chat(
            Some(
                "You sort tasks to the right specialist: legal for contracts and law, finance for money, markets and accounting, code for programming and computer science, general for everything else.",
            ),
            &question,
        );
        let scores = llm.score(prompt, labels).await?;
        Ok(scores
            .into_iter()
            .map(|s| (s.label, f64::from(s.probability)))
            .collect())
    }

    /// A decision for a specialist the caller named.
    pub fn forced(&self, agent: &str) -> RouteDecision {
        RouteDecision {
            agent: agent.to_string(),
            probability: 1.0,
            stage: RouteStage::Forced,
            candidates: Vec::new(),
            latency_ms: 0.0,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
