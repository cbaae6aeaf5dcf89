//! Deterministic domain tools for the specialists: plain typed functions,
//! no MCP and no model inside (see DESIGN.md, "Specialists").
//!
//! The specialists' tools (contract clause splitting, amount extraction,
//! fraud screening, language detection, code metrics) arrive here with the
//! specialists themselves; a model does what needs language understanding,
//! and the functions in this crate do what code does better.
