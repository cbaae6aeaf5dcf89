//! The specialists: legal, finance, code and general agents, each a small
//! model plus a domain prompt plus tools.
//!
//! [`AgentSpec`] is one `specs/agents/NAME.toml`, loaded with validation:
//! an unknown field, model or tool is an error that names the file, the
//! line and what was expected.

mod card;
pub mod confidence;
pub mod labels;
mod server;
mod spec;

pub use card::{CardFile, CardModel, ModelCard};
pub use labels::{Combine, CueFn, Decision, LabelClassifier, LabelDef, LabelScore, LabelSet, Neighbour};
pub use server::{AskParams, AskResult, GenerationReport, SpecialistServer, label_set_for_tool};
pub use spec::{AgentSpec, Measured, SpecError, Thresholds, builtin, line_col, load_dir, tools_for_domain};
