//! `triage bench workflow`: the executor's own cost per step.
//!
//! A workflow of N steps, each a cheap deterministic tool call
//! (`finance/extract_amounts` on one sentence) that needs the step before
//! it, runs through the real executor, real MCP and a real sled run store
//! on disk. With the steps in a chain, the wall time is the calls plus the
//! executor; the difference, per step, is the overhead: scheduling,
//! templates, records, and the flush (fsync) that makes each completed
//! step durable.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use serde_json::json;
use triage::workflow::exec::{self, RunOptions};
use triage::workflow::runs::RunStatus;
use triage::workflow::{Agents, Plan};

use crate::cli::ask::ControllerArgs;

/// The target: at most this much executor time per step.
const TARGET_MS: f64 = 1.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Steps in the workflow.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// The benchmark workflow: a chain of `n` tool calls.
fn spec(n: usize) -> String {
    let mut s = String::from("name: bench-chain\nversion: '1'\nconcurrency: 1\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - id: s{i}\n    agent: finance\n    tool: extract_amounts\n    with: {{ text: \"Revenue rose {}% to $1.{i} million.\" }}\n",
            i % 50
        ));
        if i > 0 {
            s.push_str(&format!("    needs: [s{}]\n", i - 1));
        }
    }
    s.push_str(&format!(
        "outputs:\n  last: \"{{{{ steps.s{}.output.amounts[0].text }}}}\"\n",
        n - 1
    ));
    s
}

pub async fn run(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let controller = Arc::new(ctx.controller(&args.controller.options(false)).await?);
    let agents = Agents::from_registry(&controller.registry);
    let runs = tempfile::tempdir()?;

    // Start the agent and warm its connection, outside the measurement.
    let warm = Plan::parse("bench-warm.yaml".as_ref(), &spec(3), &agents)?;
    let o = exec::start(
        controller.clone(),
        warm,
        Default::default(),
        runs.path(),
        RunOptions::default(),
    )
    .await?;
    if o.status != RunStatus::Completed {
        bail!(
            "the warm-up run did not complete: {}",
            o.error.unwrap_or_default()
        );
    }

    let plan = Plan::parse("bench-chain.yaml".as_ref(), &spec(args.steps), &agents)?;
    let o = exec::start(
        controller.clone(),
        plan,
        Default::default(),
        runs.path(),
        RunOptions::default(),
    )
    .await?;
    controller.shutdown().await;
    if o.status != RunStatus::Completed {
        bail!(
            "the benchmark run did not complete: {}",
            o.error.unwrap_or_default()
        );
    }
    let n = args.steps as f64;
    let overhead_ms = (o.wall_ms - o.call_ms) / n;
    let call_ms = o.call_ms / n;
    let per_second = n / (o.wall_ms / 1000.0);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "steps": args.steps, "wall_ms": o.wall_ms, "steps_per_second": per_second,
                "call_ms_per_step": call_ms, "overhead_ms_per_step": overhead_ms,
                "target_overhead_ms": TARGET_MS, "overhead_vs_target": overhead_ms / TARGET_MS,
                "durability": "each completed step flushed (fsync) before the next starts",
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "workflow executor: {} chained steps of finance/extract_amounts over MCP, sled run store on disk",
        args.steps
    )?;
    crate::cli::print_table(
        &mut out,
        &["measure", "value", "target", "ratio"],
        &[
            vec![
                "wall time".into(),
                format!("{:.2} s", o.wall_ms / 1000.0),
                "-".into(),
                "-".into(),
            ],
            vec![
                "steps per second".into(),
                format!("{per_second:.0}"),
                "-".into(),
                "-".into(),
            ],
            vec![
                "tool call per step".into(),
                format!("{call_ms:.3} ms"),
                "-".into(),
                "-".into(),
            ],
            vec![
                "executor overhead per step".into(),
                format!("{overhead_ms:.3} ms"),
                format!("≤ {TARGET_MS:.1} ms"),
                format!("{:.2}×", overhead_ms / TARGET_MS),
            ],
        ],
    )?;
    writeln!(
        out,
        "durability: each completed step is flushed (fsync) before any step that needs it starts"
    )?;
    Ok(ExitCode::SUCCESS)
}
