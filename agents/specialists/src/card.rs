//! A specialist's model card: what answers (model, version, sha256,
//! licence, size), how it is prompted, what it serves, and how well it did
//! on the dev data. Served as an MCP resource at
//! `triage://agents/NAME/model-card`.

use serde::{Deserialize, Serialize};
use triage_models::{Catalog, ModelSpec};

use crate::{AgentSpec, label_set_for_tool};

/// A model as the card shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardModel {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub quantization: Option<String>,
    pub parameters: Option<String>,
    pub licence: String,
    pub description: String,
    /// Each file with its size and sha256, as verified before loading.
    pub files: Vec<CardFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl From<&ModelSpec> for CardModel {
    fn from(m: &ModelSpec) -> CardModel {
        CardModel {
            name: m.name.clone(),
            version: m.version.clone(),
            architecture: m.architecture.clone(),
            quantization: m.quantization.clone(),
            parameters: m.parameters.clone(),
            licence: m.licence.clone(),
            description: m.description.clone(),
            files: m
                .files
                .iter()
                .map(|f| CardFile {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
        }
    }
}

/// The card of one specialist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub agent: String,
    pub agent_version: String,
    pub domain: String,
    pub description: String,
    pub tools: Vec<String>,
    pub system_prompt: String,
    pub min_confidence: f64,
    /// The generation model behind `ask` (and `explain`).
    pub model: CardModel,
    /// The sentence encoder behind the label tools, if any.
    pub encoder: Option<CardModel>,
    /// Label sets (specs/labels) the label tools learn from.
    pub label_sets: Vec<String>,
    /// Measured accuracy on the dev data, from the spec's `[[measured]]`.
    pub measured: Vec<crate::spec::Measured>,
}

impl ModelCard {
    /// The card for `spec`, with model details from `catalog`; `encoder`
    /// names the catalog model behind the label tools.
    pub fn new(spec: &AgentSpec, catalog: &Catalog, encoder: &str) -> ModelCard {
        let label_sets: Vec<String> = spec
            .tools
            .iter()
            .filter_map(|t| label_set_for_tool(t))
            .map(String::from)
            .collect();
        let model = catalog
            .get(&spec.model)
            .map(CardModel::from)
            .expect("specs are validated against the catalog");
        ModelCard {
            agent: spec.name.clone(),
            agent_version: spec.version.clone(),
            domain: spec.domain.clone(),
            description: spec.description.clone(),
            tools: spec.tools.clone(),
            system_prompt: spec.system_prompt.clone(),
            min_confidence: spec.thresholds.min_confidence,
            model,
            encoder: if label_sets.is_empty() {
                None
            } else {
                catalog.get(encoder).ok().map(CardModel::from)
            },
            label_sets,
            measured: spec.measured.clone(),
        }
    }
}
