//! Workflows: declarative YAML specs of steps over the specialists,
//! validated into a DAG, executed in parallel, and recorded durably so a
//! killed run resumes where it stopped (see DESIGN.md, "Workflows").

pub mod exec;
pub mod library;
pub mod plan;
pub mod runs;
pub mod spec;
pub mod template;

pub use plan::{Action, Agents, Plan, Problem, SpecErrors, Step};
pub use spec::{WorkflowSpec, json_schema};
