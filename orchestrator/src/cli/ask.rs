//! `triage ask` and `triage route`: a task routed to a specialist and
//! answered (or only routed), with the controller's reasoning on request.

use std::io::{Read as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use triage::ControllerOptions;
use triage::controller::{AskOutcome, AskRequest};
use triage::dispatch::CallOptions;
use triage::router::{RouteDecision, RouteStage};

/// Where the controller's parts come from; shared by the commands that
/// build one.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Folder of agent specs instead of the built-in specs/agents.
    #[arg(long, env = "TRIAGE_AGENTS", value_name = "DIR")]
    pub specs: Option<PathBuf>,
    /// Registry of extra agents (and overrides), merged over
    /// specs/registry.toml [default: $TRIAGE_HOME/registry.toml if present].
    #[arg(long, env = "TRIAGE_REGISTRY", value_name = "FILE")]
    pub registry: Option<PathBuf>,
    /// Router configuration instead of the built-in specs/router.toml.
    #[arg(long, value_name = "FILE")]
    pub router: Option<PathBuf>,
}

impl ControllerArgs {
    pub fn options(&self, slm: bool) -> ControllerOptions {
        ControllerOptions {
            specs: self.specs.clone(),
            registry: self.registry.clone(),
            router: self.router.clone(),
            slm,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// The task: text, `@FILE` to read a file, or `-` for stdin.
    #[arg(value_name = "TEXT")]
    text: String,
    /// Send it to this specialist instead of routing.
    #[arg(long, value_name = "NAME")]
    domain: Option<String>,
    /// Hold the answer to this confidence instead of the specialist's
    /// threshold.
    #[arg(long, value_name = "P")]
    min_confidence: Option<f64>,
    /// Return the first answer whatever its confidence (flagged when low).
    #[arg(long)]
    no_escalate: bool,
    /// Longest answer, in tokens.
    #[arg(long, value_name = "N")]
    max_tokens: Option<usize>,
    /// Time allowed for each call to an agent, in milliseconds (default:
    /// the agent's timeout_ms).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Also show the routing decision: candidates, scores, nearest examples.
    #[arg(long)]
    explain: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// The task: text, `@FILE` to read a file, or `-` for stdin.
    #[arg(value_name = "TEXT")]
    text: String,
    /// Nearest examples to show per candidate.
    #[arg(long, default_value_t = 2, value_name = "N")]
    nearest: usize,
    /// Similarity only: never ask the small model.
    #[arg(long)]
    no_slm: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// The task text: literal, `@FILE`, or `-` for stdin.
pub fn read_task(arg: &str) -> anyhow::Result<String> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the task from stdin")?;
        s
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("cannot read the task from {path}"))?
    } else {
        arg.to_string()
    };
    if text.trim().is_empty() {
        bail!("the task is empty: give the text, @FILE or - (stdin)");
    }
    Ok(text)
}

pub async fn route(ctx: &triage::Context, args: RouteArgs) -> anyhow::Result<ExitCode> {
    let text = read_task(&args.text)?;
    let controller = ctx.controller(&args.controller.options(!args.no_slm)).await?;
    let (decision, warnings) = controller.route(&text, None, args.nearest).await?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&decision)?)?;
    } else {
        print_route(&mut out, &decision)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn ask(ctx: &triage::Context, args: AskArgs) -> anyhow::Result<ExitCode> {
    let text = read_task(&args.text)?;
    if let Some(p) = args.min_confidence
        && !(0.0..=1.0).contains(&p)
    {
        bail!("--min-confidence must be between 0 and 1, not {p}");
    }
    let controller = ctx.controller(&args.controller.options(true)).await?;
    let request = AskRequest {
        text,
        domain: args.domain.clone(),
        min_confidence: args.min_confidence,
        escalate: !args.no_escalate,
        max_tokens: args.max_tokens,
        nearest: if args.explain { 2 } else { 0 },
    };
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let options = CallOptions {
        timeout: args.timeout_ms.map(Duration::from_millis),
        attempts: None,
        progress: Some(tx),
        cancel: cancel.clone(),
    };
    // Progress from the agent, shown on stderr while it generates.
    let bar = if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("routing...");
    let shown = bar.clone();
    let progress = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let total = p.total.map(|t| format!("/{t}")).unwrap_or_default();
            shown.set_message(format!("{}: {}{total} tokens", p.agent, p.progress));
        }
    });
    let asking = controller.ask(&request, &options);
    tokio::pin!(asking);
    let outcome = tokio::select! {
        r = &mut asking => r,
        _ = tokio::signal::ctrl_c() => {
            // Ctrl-C: the call is cancelled on the agent, then we leave.
            bar.finish_and_clear();
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut asking).await;
            controller.shutdown().await;
            eprintln!("cancelled");
            return Ok(ExitCode::from(130));
        }
    };
    bar.finish_and_clear();
    controller.shutdown().await;
    progress.abort();
    let outcome = outcome?;
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&outcome)?)?;
    } else {
        print_answer(&mut out, &outcome, args.explain)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_answer(out: &mut impl Write, o: &AskOutcome, explain: bool) -> std::io::Result<()> {
    writeln!(out, "{}", o.answer.trim())?;
    writeln!(out)?;
    let who = match (&o.model, &o.agent_version) {
        (Some(m), Some(v)) => format!("{} {v}, model {m}", o.agent),
        (Some(m), None) => format!("{}, model {m}", o.agent),
        _ => o.agent.clone(),
    };
    let confidence = o.confidence.map_or("not reported".into(), |c| format!("{c:.2}"));
    writeln!(out, "answered by  {who}")?;
    writeln!(out, "confidence   {confidence} (threshold {:.2})", o.threshold)?;
    let path: Vec<String> = o
        .hops
        .iter()
        .map(|h| {
            let stage = match h.stage {
                triage::controller::HopStage::Specialist => "specialist",
                triage::controller::HopStage::Samples => "samples",
                triage::controller::HopStage::Fallback => "fallback",
            };
            let c = h.confidence.map(|c| format!(" {c:.2}")).unwrap_or_default();
            format!("{stage} {}{c} {}", h.agent, h.outcome)
        })
        .collect();
    writeln!(out, "path         {}", path.join(" → "))?;
    writeln!(
        out,
        "route        {} ({:.2}, {})",
        o.route.agent,
        o.route.probability,
        stage_name(o.route.stage)
    )?;
    writeln!(
        out,
        "latency      {:.2} s, {} tokens",
        o.latency_ms / 1000.0,
        o.tokens
    )?;
    for h in o.hops.iter().filter_map(|h| h.note.as_ref()) {
        writeln!(out, "note         {h}")?;
    }
    if o.low_confidence {
        writeln!(
            out,
            "warning      low confidence: below {:.2} and no fallback took it; check this answer",
            o.threshold
        )?;
    }
    if explain && !o.route.candidates.is_empty() {
        writeln!(out)?;
        print_route(out, &o.route)?;
    }
    Ok(())
}

fn stage_name(stage: RouteStage) -> &'static str {
    match stage {
        RouteStage::Similarity => "by similarity to example requests",
        RouteStage::Slm => "similarity combined with the small model's choice",
        RouteStage::Fallback => "no specialist was confident: fallback",
        RouteStage::Forced => "named with --domain",
    }
}

fn print_route(out: &mut impl Write, d: &RouteDecision) -> std::io::Result<()> {
    writeln!(
        out,
        "routed to {} with probability {:.3} ({}), in {:.1} ms",
        d.agent,
        d.probability,
        stage_name(d.stage),
        d.latency_ms
    )?;
    let rows: Vec<Vec<String>> = d
        .candidates
        .iter()
        .map(|c| {
            vec![
                c.agent.clone(),
                format!("{:.3}", c.probability),
                format!("{:.3}", c.similarity),
                c.slm_probability.map_or("-".into(), |p| format!("{p:.3}")),
                c.nearest
                    .first()
                    .map(|n| format!("{:.2} {}", n.similarity, super::shorten(&n.example, 60)))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    super::print_table(
        out,
        &[
            "candidate",
            "probability",
            "similarity",
            "small model",
            "nearest example",
        ],
        &rows,
    )
}
