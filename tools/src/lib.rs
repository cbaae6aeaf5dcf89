//! Deterministic domain tools for the specialists: plain typed functions,
//! no MCP and no model inside (see DESIGN.md, "Specialists"). Parameters
//! and results derive `JsonSchema`, so a specialist can publish them as a
//! tool's input and output schemas unchanged. A model does what needs
//! language understanding; these functions do what code does better.

pub mod arithmetic;
pub mod code;
pub mod cues;
pub mod finance;
pub mod legal;

/// A tool refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// A parameter is missing, malformed or out of range.
    #[error("invalid `{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl ToolError {
    pub(crate) fn invalid(field: &str, message: String) -> ToolError {
        ToolError::Invalid {
            field: field.to_string(),
            message,
        }
    }
}
