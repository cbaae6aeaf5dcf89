//! `triage validate FILE...`: check workflow specs without running them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use triage::workflow::{Agents, Plan, json_schema};

use super::ask::ControllerArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow specs (YAML).
    #[arg(value_name = "FILE", required_unless_present = "schema")]
    files: Vec<PathBuf>,
    /// Print the JSON Schema of the workflow format instead (the one in
    /// specs/schema/workflow.schema.json).
    #[arg(long, conflicts_with = "files")]
    schema: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

pub fn run(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if args.schema {
        write!(out, "{}", json_schema())?;
        return Ok(ExitCode::SUCCESS);
    }
    let (_, registry) = ctx.registry(&args.controller.options(false))?;
    let agents = Agents::from_registry(&registry);
    let mut reports = Vec::new();
    let mut failed = false;
    for file in &args.files {
        match Plan::load(file, &agents) {
            Ok(plan) => {
                let order: Vec<&str> = plan.order.iter().map(|&i| plan.steps[i].id.as_str()).collect();
                if !args.json {
                    writeln!(
                        out,
                        "{}: ok — {} {} ({} steps: {})",
                        file.display(),
                        plan.name,
                        plan.version,
                        plan.steps.len(),
                        order.join(", ")
                    )?;
                }
                reports.push(json!({ "file": file, "ok": true, "name": plan.name, "version": plan.version, "order": order }));
            }
            Err(e) => {
                failed = true;
                if !args.json {
                    writeln!(out, "{e}")?;
                }
                let problems: Vec<_> = e
                    .problems
                    .iter()
                    .map(|p| json!({ "line": p.line, "column": p.column, "message": p.message }))
                    .collect();
                reports.push(json!({ "file": file, "ok": false, "problems": problems }));
            }
        }
    }
    if args.json {
        writeln!(out, "{}", json!({ "files": reports, "ok": !failed }))?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
