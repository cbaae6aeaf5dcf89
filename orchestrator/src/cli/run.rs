//! `triage run FILE` and `triage runs list|show|resume|cancel`: workflow
//! runs, started, watched, resumed after a crash, and cancelled.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use triage::store::now;
use triage::workflow::exec::{self, CANCEL_FILE, Progress, RunOptions, RunOutcome};
use triage::workflow::runs::{self, RunStatus, RunStore, StepStatus};
use triage::workflow::{Agents, Plan};

use super::ask::ControllerArgs;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow spec (YAML).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// An input: NAME=VALUE, or NAME=@FILE to read the value from a file.
    /// Values of non-string inputs are read as JSON (`n=3`, `xs=[1,2]`).
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// Inputs from a JSON object in a file (merged under --input).
    #[arg(long, value_name = "FILE")]
    inputs_file: Option<PathBuf>,
    #[command(flatten)]
    watch: WatchArgs,
    #[command(flatten)]
    controller: ControllerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Print one JSON object at the end (no progress lines).
    #[arg(long)]
    json: bool,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// Every run, newest first: workflow, status, when.
    #[command(visible_alias = "ls")]
    List {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// One run: its steps (status, agent, model, time, confidence) and its
    /// event timeline.
    Show {
        id: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Finish a run that was interrupted, failed or cancelled: completed
    /// steps are kept, the rest run.
    Resume {
        id: String,
        #[command(flatten)]
        watch: WatchArgs,
        #[command(flatten)]
        controller: ControllerArgs,
    },
    /// Cancel a run: a running one stops its calls and is recorded as
    /// cancelled.
    Cancel {
        id: String,
        /// How long to wait for a running run to stop, in seconds.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

pub async fn run(ctx: &triage::Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    let (_, registry) = ctx.registry(&args.controller.options(false))?;
    let agents = Agents::from_registry(&registry);
    drop(registry);
    let plan = Plan::load(&args.file, &agents)?;
    let given = parse_inputs(&plan, &args.inputs, args.inputs_file.as_deref())?;
    let inputs = exec::resolve_inputs(&plan, given)
        .map_err(|e| anyhow::anyhow!("{e}; give inputs with --input NAME=VALUE (or NAME=@FILE)"))?;
    let controller = Arc::new(ctx.controller(&args.controller.options(false)).await?);
    let runs = runs::runs_dir(ctx.store.home());
    let watch = args.watch.clone();
    execute(controller, &watch, move |c, options| async move {
        exec::start(c, plan, inputs, &runs, options).await
    })
    .await
}

pub async fn runs(ctx: &triage::Context, cmd: RunsCommand) -> anyhow::Result<ExitCode> {
    let dir = runs::runs_dir(ctx.store.home());
    match cmd {
        RunsCommand::List { json } => list(&dir, json),
        RunsCommand::Show { id, json } => show(&dir, &id, json),
        RunsCommand::Resume {
            id,
            watch,
            controller,
        } => {
            let (_, registry) = ctx.registry(&controller.options(false))?;
            let agents = Agents::from_registry(&registry);
            drop(registry);
            // Refuse early (before loading models) if it is running.
            drop(RunStore::open(&dir, &id)?);
            let controller = Arc::new(ctx.controller(&controller.options(false)).await?);
            execute(controller, &watch, move |c, options| async move {
                exec::resume(c, &agents, &dir, &id, options).await
            })
            .await
        }
        RunsCommand::Cancel { id, wait } => cancel(&dir, &id, Duration::from_secs(wait)),
    }
}

/// Inputs from `--inputs-file` then `--input NAME=VALUE`.
fn parse_inputs(
    plan: &Plan,
    pairs: &[String],
    file: Option<&Path>,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut given = BTreeMap::new();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let Value::Object(map) =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?
        else {
            bail!("{} must hold a JSON object of inputs", f.display());
        };
        given.extend(map);
    }
    for pair in pairs {
        let Some((name, raw)) = pair.split_once('=') else {
            bail!("--input `{pair}` needs a value: write NAME=VALUE or NAME=@FILE");
        };
        let text = match raw.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read input `{name}` from {path}"))?,
            None => raw.to_string(),
        };
        let is_string = plan
            .inputs
            .get(name)
            .is_none_or(|i| i.kind == triage::workflow::spec::InputType::String);
        let value = if is_string {
            Value::String(text)
        } else {
            serde_json::from_str(&text).with_context(|| {
                format!("input `{name}` must be JSON (for example 3, true or [1, 2]), not `{text}`")
            })?
        };
        given.insert(name.to_string(), value);
    }
    Ok(given)
}

/// Runs `go` with progress lines, Ctrl-C cancelling the run, and prints
/// how it ended.
async fn execute<F, Fut>(
    controller: Arc<triage::controller::Controller>,
    watch: &WatchArgs,
    go: F,
) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Arc<triage::controller::Controller>, RunOptions) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<RunOutcome>>,
{
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let show = !watch.json && !watch.quiet;
    let printer = tokio::spawn(print_progress(rx, show));
    let options = RunOptions {
        cancel: cancel.clone(),
        progress: Some(tx),
        live: None,
    };
    let running = go(controller.clone(), options);
    tokio::pin!(running);
    let mut interrupted = false;
    let outcome = loop {
        tokio::select! {
            r = &mut running => break r,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                eprintln!("cancelling: the calls in flight are cancelled on their agents…");
                interrupted = true;
                cancel.cancel();
            }
        }
    };
    let _ = printer.await;
    controller.shutdown().await;
    let outcome = outcome?;
    let mut out = std::io::stdout().lock();
    if watch.json {
        writeln!(
            out,
            "{}",
            json!({ "id": outcome.id, "status": outcome.status, "outputs": outcome.outputs, "error": outcome.error, "steps_run": outcome.steps_run, "wall_ms": outcome.wall_ms })
        )?;
    } else {
        match outcome.status {
            RunStatus::Completed => {
                eprintln!(
                    "run {} completed in {:.1} s",
                    outcome.id,
                    outcome.wall_ms / 1000.0
                );
                if let Some(Value::Object(outputs)) = &outcome.outputs {
                    for (name, value) in outputs {
                        match value {
                            Value::String(s) => writeln!(out, "{name}:\n{s}\n")?,
                            v => writeln!(out, "{name}:\n{}\n", serde_json::to_string_pretty(v)?)?,
                        }
                    }
                }
            }
            RunStatus::Cancelled => eprintln!(
                "run {} cancelled; resume it with `triage runs resume {}`",
                outcome.id, outcome.id
            ),
            _ => eprintln!(
                "run {} failed: {}\nsee `triage runs show {}`; resume it with `triage runs resume {}`",
                outcome.id,
                outcome.error.as_deref().unwrap_or("unknown"),
                outcome.id,
                outcome.id
            ),
        }
    }
    Ok(match outcome.status {
        RunStatus::Completed => ExitCode::SUCCESS,
        RunStatus::Cancelled => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    })
}

/// A line per step as it finishes; a bar for fan-out.
async fn print_progress(mut rx: mpsc::UnboundedReceiver<Progress>, show: bool) {
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let style =
        ProgressStyle::with_template("  {prefix:<16} {bar:30} {pos}/{len} items").expect("a valid template");
    while let Some(p) = rx.recv().await {
        if !show {
            continue;
        }
        match p {
            Progress::RunStarted { id, steps } => eprintln!("run {id}: {steps} steps"),
            Progress::StepStarted { step, what, items } => match items {
                Some(n) => {
                    let bar = ProgressBar::new(n as u64)
                        .with_style(style.clone())
                        .with_prefix(step.clone());
                    bars.insert(step, bar);
                }
                None => eprintln!("▶ {step:<16} {what}"),
            },
            Progress::ItemFinished {
                step,
                index,
                done,
                total,
            } => {
                if let Some(bar) = bars.get(&step) {
                    bar.set_position(done as u64);
                    // Without a terminal there is no bar: a line per item.
                    if let Some(i) = index.filter(|_| bar.is_hidden()) {
                        eprintln!("  {step}[{i}] completed ({done}/{total})");
                    }
                }
            }
            Progress::StepFinished {
                step,
                status,
                duration_ms,
                confidence,
                note,
            } => {
                if let Some(bar) = bars.remove(&step) {
                    bar.finish_and_clear();
                }
                let mark = match status {
                    StepStatus::Completed => "✓",
                    StepStatus::Skipped => "–",
                    _ => "✗",
                };
                let conf = confidence.map_or(String::new(), |c| format!("  confidence {c:.2}"));
                let note = note.map_or(String::new(), |n| format!("  ({})", super::shorten(&n, 100)));
                eprintln!(
                    "{mark} {step:<16} {:<9} {:>7.2} s{conf}{note}",
                    status_name(status),
                    duration_ms / 1000.0
                );
            }
            Progress::StepRestored { step, status } => {
                eprintln!("· {step:<16} {} earlier (kept)", status_name(status))
            }
        }
    }
}

fn status_name(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Running => "running",
        StepStatus::Completed => "completed",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Cancelled => "cancelled",
    }
}

fn list(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let all = runs::list(dir);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", json!({ "runs": all }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        writeln!(
            out,
            "no runs yet in {} (start one with `triage run FILE`)",
            dir.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|r| {
            let s = |k: &str| r.meta[k].as_str().unwrap_or("").to_string();
            vec![
                s("id"),
                format!("{} {}", s("workflow"), s("version")),
                r.status.as_str().into(),
                s("created_at"),
                s("updated_at"),
            ]
        })
        .collect();
    super::print_table(
        &mut out,
        &["ID", "WORKFLOW", "STATUS", "STARTED", "UPDATED"],
        &rows,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn show(dir: &Path, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let view = match runs::read_run(dir, id, None) {
        Ok(v) => v,
        Err(runs::RunsError::Store(triage::store::StoreError::Busy { holder, .. })) => {
            bail!(
                "run {id} is running in {holder}; its steps can be shown once it finishes (or cancel it with `triage runs cancel {id}`)"
            )
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&view)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (meta, steps, events, status) = (view.meta, view.steps, view.events, view.status);
    writeln!(
        out,
        "run {}: {} {} ({}), {}",
        meta.id,
        meta.workflow,
        meta.version,
        meta.path.display(),
        status.as_str()
    )?;
    writeln!(
        out,
        "started {}, updated {}, resumed {} time(s)",
        meta.created_at, meta.updated_at, meta.resumes
    )?;
    if let Some(e) = &meta.error {
        writeln!(out, "error: {e}")?;
    }
    writeln!(out)?;
    let mut top: Vec<&runs::StepRecord> = steps.iter().filter(|s| s.item.is_none()).collect();
    top.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    let rows: Vec<Vec<String>> = top
        .into_iter()
        .map(|s| {
            let items = steps
                .iter()
                .filter(|i| i.step == s.step && i.item.is_some())
                .count();
            vec![
                s.step.clone(),
                status_name(s.status).into(),
                match (&s.agent, &s.tool) {
                    (Some(a), Some(t)) => format!("{a}/{t}"),
                    _ if items > 0 => format!("{items} items"),
                    _ => "-".into(),
                },
                s.model.clone().map_or("-".into(), |m| {
                    format!("{m} {}", s.agent_version.clone().unwrap_or_default())
                }),
                s.duration_ms
                    .map_or("-".into(), |d| format!("{:.2} s", d / 1000.0)),
                s.confidence.map_or("-".into(), |c| format!("{c:.2}")),
                if s.escalations.is_empty() {
                    s.error.clone().map_or("-".into(), |e| super::shorten(&e, 60))
                } else {
                    s.escalations.join("; ")
                },
            ]
        })
        .collect();
    super::print_table(
        &mut out,
        &[
            "STEP",
            "STATUS",
            "CALL",
            "MODEL",
            "TIME",
            "CONFIDENCE",
            "ESCALATIONS / NOTE",
        ],
        &rows,
    )?;
    writeln!(out, "\ntimeline:")?;
    let start = events
        .first()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(&e.at).ok());
    for e in &events {
        let offset = match (start, chrono::DateTime::parse_from_rfc3339(&e.at).ok()) {
            (Some(s), Some(t)) => format!("+{:.3} s", (t - s).num_milliseconds() as f64 / 1000.0),
            _ => e.at.clone(),
        };
        let what = match (&e.step, e.item) {
            (Some(s), Some(i)) => format!("{s}[{i}]"),
            (Some(s), None) => s.clone(),
            _ => String::new(),
        };
        let detail = e
            .detail
            .as_deref()
            .map_or(String::new(), |d| format!("  {}", super::shorten(d, 80)));
        writeln!(out, "  {offset:>10}  {:<15} {what}{detail}", e.kind)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cancel(dir: &Path, id: &str, wait: Duration) -> anyhow::Result<ExitCode> {
    match RunStore::open(dir, id) {
        Ok(store) => {
            // Not running: record it as cancelled, unless it already ended.
            let mut meta = store.meta()?;
            match meta.status {
                RunStatus::Completed | RunStatus::Cancelled => {
                    println!("run {id} is already {}; nothing to cancel", meta.status.as_str());
                }
                _ => {
                    meta.status = RunStatus::Cancelled;
                    meta.pid = None;
                    meta.updated_at = now();
                    store.event(
                        "run_cancelled",
                        None,
                        None,
                        Some("cancelled while not running".into()),
                    )?;
                    store.set_meta(&meta)?;
                    println!("run {id} cancelled (it was not running)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(runs::RunsError::Store(triage::store::StoreError::Busy { holder, .. })) => {
            std::fs::write(dir.join(id).join(CANCEL_FILE), now()).context("cannot ask the run to cancel")?;
            let start = std::time::Instant::now();
            while start.elapsed() < wait {
                std::thread::sleep(Duration::from_millis(100));
                if let Ok(store) = RunStore::open(dir, id) {
                    let status = store.meta()?.status;
                    println!("run {id} {}", status.as_str());
                    return Ok(ExitCode::SUCCESS);
                }
            }
            bail!("asked {holder} to cancel run {id}, but it has not stopped after {wait:?}");
        }
        Err(e) => Err(e.into()),
    }
}
