//! The specialists: legal, finance, code and general agents, each a small
//! model plus a domain prompt plus tools.
//!
//! [`AgentSpec`] is one `specs/agents/NAME.toml`, loaded with validation:
//! an unknown field, model or tool is an error that names the file, the
//! line and what was expected.

mod server;
mod spec;

pub use server::{AskParams, AskResult, SpecialistServer};
pub use spec::{AgentSpec, SpecError, Thresholds, builtin, load_dir, tools_for_domain};
