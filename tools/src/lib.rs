//! Deterministic domain tools for the specialists: plain typed functions,
//! no MCP and no model inside (see DESIGN.md, "Specialists"). Parameters
//! and results derive `JsonSchema`, so a specialist can publish them as a
//! tool's input and output schemas unchanged. A model does what needs
//! language understanding; these functions do what code does better.

pub mod code;
