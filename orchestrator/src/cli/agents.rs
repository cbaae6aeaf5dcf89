//! `triage agents list|health|stats`: the registered agents, whether they
//! answer, and what they have done.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use rmcp::model::ReadResourceRequestParams;
use serde_json::json;
use triage::store::Store as _;

use super::ask::ControllerArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The registered agents: where each runs and which spec it serves.
    List(Args),
    /// Start (or connect to) each agent, ping it and read its version.
    Health(HealthArgs),
    /// Calls, errors, latency, tokens and escalations per agent, from the
    /// store.
    Stats(Args),
    /// Connect to any MCP server by URL (streamable HTTP) as a client:
    /// handshake, ping, list its tools, resources and prompts, call tools.
    Probe(super::probe::ProbeArgs),
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Only these agents.
    #[arg(value_name = "NAME")]
    names: Vec<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

pub async fn run(ctx: &triage::Context, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::List(args) => list(ctx, args).await,
        Command::Health(args) => health(ctx, args).await,
        Command::Stats(args) => stats(ctx, args).await,
        Command::Probe(args) => super::probe::run(args).await,
    }
}

async fn list(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    let (_, registry) = ctx.registry(&args.controller.options(false))?;
    let agents: Vec<serde_json::Value> = registry
        .agents()
        .map(|a| {
            json!({
                "name": a.name(),
                "spec": a.spec.as_ref().map(|s| &s.name),
                "version": a.spec.as_ref().map(|s| &s.version),
                "model": a.spec.as_ref().map(|s| &s.model),
                "runs": a.location(),
                "timeout_ms": a.entry.timeout_ms,
                "description": a.entry.description.clone().or_else(|| a.spec.as_ref().map(|s| s.description.clone())),
            })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({ "agents": agents, "cascade": registry.cascade })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
            vec![s("name"), s("spec"), s("version"), s("model"), s("runs")]
        })
        .collect();
    super::print_table(&mut out, &["NAME", "SPEC", "VERSION", "MODEL", "RUNS"], &rows)?;
    let fallback = registry.cascade.fallback.as_ref().map_or(
        "none (low-confidence answers are flagged, not sent anywhere)".into(),
        |f| format!("{} (tool {})", f.agent, f.tool),
    );
    writeln!(out, "\nfallback for low-confidence answers: {fallback}")?;
    Ok(ExitCode::SUCCESS)
}

async fn health(ctx: &triage::Context, args: HealthArgs) -> anyhow::Result<ExitCode> {
    let (_, registry) = ctx.registry(&args.controller.options(false))?;
    let mut chosen = Vec::new();
    for n in &args.names {
        chosen.push(registry.get(n)?);
    }
    if chosen.is_empty() {
        chosen = registry.agents().cloned().collect();
    }
    // Every agent at once: stdio agents start in parallel.
    let reports: Vec<serde_json::Value> = futures::future::join_all(chosen.iter().map(|a| async move {
        let ping = a.ping().await;
        let (server, version) = a.server_info().await.unwrap_or_default();
        // Our specialists publish a model card with the model's version.
        let mut model = None;
        if ping.is_ok()
            && a.spec.is_some()
            && let Ok(conn) = a.connect().await
        {
            let uri = format!(
                "triage://agents/{}/model-card",
                a.spec.as_ref().map_or("", |s| &s.name)
            );
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                conn.peer.read_resource(ReadResourceRequestParams::new(uri)),
            )
            .await;
            if let Ok(Ok(r)) = read
                && let Some(rmcp::model::ResourceContents::TextResourceContents { text, .. }) =
                    r.contents.first()
            {
                let card: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                model = Some(format!(
                    "{} {}",
                    card["model"]["name"].as_str().unwrap_or("?"),
                    card["model"]["version"].as_str().unwrap_or("?")
                ));
            }
        }
        json!({
            "name": a.name(),
            "ok": ping.is_ok(),
            "ping_ms": ping.as_ref().ok().map(|d| d.as_secs_f64() * 1000.0),
            "error": ping.as_ref().err().map(|e| format!("{e:#}")),
            "server": server,
            "server_version": version,
            "model": model,
            "pid": a.pid().await,
        })
    }))
    .await;
    let all_ok = reports.iter().all(|r| r["ok"] == true);
    registry.shutdown().await;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json!({ "agents": reports }))?;
    } else {
        let rows: Vec<Vec<String>> = reports
            .iter()
            .map(|r| {
                vec![
                    r["name"].as_str().unwrap_or_default().to_string(),
                    if r["ok"].as_bool() == Some(true) {
                        "ok".into()
                    } else {
                        "DOWN".into()
                    },
                    r["ping_ms"].as_f64().map_or("-".into(), |p| format!("{p:.1} ms")),
                    format!(
                        "{} {}",
                        r["server"].as_str().unwrap_or_default(),
                        r["server_version"].as_str().unwrap_or_default()
                    )
                    .trim()
                    .to_string(),
                    r["model"].as_str().unwrap_or("-").to_string(),
                    r["error"].as_str().unwrap_or_default().to_string(),
                ]
            })
            .collect();
        super::print_table(
            &mut out,
            &["AGENT", "STATUS", "PING", "SERVER", "MODEL", "ERROR"],
            &rows,
        )?;
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn stats(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    let (_, registry) = ctx.registry(&args.controller.options(false))?;
    let stats = ctx.controller_store().agent_stats()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json!({ "agents": stats }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut names: Vec<String> = registry.agents().map(|a| a.name().to_string()).collect();
    names.extend(
        stats
            .keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            let s = stats.get(n).cloned().unwrap_or_default();
            vec![
                n.clone(),
                s.calls.to_string(),
                s.errors.to_string(),
                format!("{:.0} ms", s.latency_ms_p50),
                format!("{:.0} ms", s.latency_ms_p95),
                s.tokens.to_string(),
                s.escalations.to_string(),
            ]
        })
        .collect();
    super::print_table(
        &mut out,
        &["AGENT", "CALLS", "ERRORS", "P50", "P95", "TOKENS", "ESCALATIONS"],
        &rows,
    )?;
    Ok(ExitCode::SUCCESS)
}
