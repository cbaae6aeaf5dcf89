//! `triage bench gateway`: the gateway under load.
//!
//! The gateway serves streamable HTTP on a loopback port in this process
//! (with its specialists as child processes, as `triage serve` runs them);
//! N MCP client sessions connect over real HTTP and call, as fast as each
//! gets answers, first a cheap tool (forwarded to a specialist: a full
//! client → gateway → specialist → gateway → client round trip), then
//! `ask` (routing, generation, the confidence check). Each phase prints
//! calls per second, latency percentiles and errors. Afterwards the
//! sessions are closed and the gateway shut down, and the bench checks
//! that no session is left open on the server and no specialist process
//! is left running. The calls are recorded in a scratch store, not yours.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rmcp::model::{CallToolRequestParams, JsonObject};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use triage::gateway::http::{self, HttpOptions, Listening};
use triage::gateway::{Gateway, GatewayOptions};
use triage::probe::{self, ProbeClient};
use triage::store::SledStore;

use crate::cli::ask::ControllerArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent MCP client sessions.
    #[arg(long, default_value_t = 32)]
    sessions: usize,
    /// Seconds of calls to the cheap tool.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The cheap tool, and its arguments as JSON.
    #[arg(long, default_value = "code_detect_language")]
    tool: String,
    #[arg(long, default_value = r#"{"code": "def add(a, b):\n    return a + b\n"}"#)]
    tool_args: String,
    /// Seconds of `ask` calls (0 skips them).
    #[arg(long, default_value_t = 20)]
    ask_seconds: u64,
    /// Longest answer per `ask`, in tokens.
    #[arg(long, default_value_t = 8)]
    ask_tokens: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// What one phase measured.
#[derive(Debug, Clone, serde::Serialize)]
struct Phase {
    tool: String,
    sessions: usize,
    seconds: f64,
    calls: usize,
    errors: usize,
    calls_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The first error, to say what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

pub async fn run(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    if args.sessions == 0 || args.seconds == 0 {
        bail!("--sessions and --seconds must be at least 1");
    }
    let Value::Object(tool_args) =
        serde_json::from_str(&args.tool_args).context("--tool-args must be JSON")?
    else {
        bail!("--tool-args must be a JSON object");
    };
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let mut controller = ctx.controller(&args.controller.options(false)).await?;
    controller.store = Arc::new(SledStore::new(
        scratch.path().join("store"),
        Duration::from_secs(60),
    ));
    let gateway = Gateway::new(
        Arc::new(controller),
        &ctx.catalog,
        GatewayOptions {
            workflows: None,
            allow_tools: None,
            max_calls: 8,
            runs: scratch.path().join("runs"),
        },
    )?;
    let shutdown = CancellationToken::new();
    let options = HttpOptions {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        token: None,
        allow_hosts: Vec::new(),
        allow_origins: Vec::new(),
        max_body: 4 * 1024 * 1024,
    };
    let listening = http::bind(gateway.clone(), &options, shutdown.clone()).await?;
    let url = format!("http://{}{}", listening.addr, http::PATH);
    let sessions = listening.sessions.clone();
    let server = tokio::spawn(listening.serve(shutdown.clone()));

    let mut clients = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        clients.push(probe::connect(&url, None, ProbeClient::default()).await?);
    }
    let open_during = Listening::open_sessions(&sessions).await;
    // One call first: it starts the specialist's process.
    let warm = clients[0]
        .call_tool(CallToolRequestParams::new(args.tool.clone()).with_arguments(tool_args.clone()))
        .await
        .with_context(|| format!("calling {}", args.tool))?;
    if warm.is_error == Some(true) {
        bail!("{} failed: {}", args.tool, triage::controller::text_of(&warm));
    }
    let mut phases = vec![
        load(
            &clients,
            &args.tool,
            &tool_args,
            Duration::from_secs(args.seconds),
        )
        .await,
    ];
    if args.ask_seconds > 0 {
        let ask_args = json!({
            "task": "What does the Python expression len([1, 2, 3]) return?",
            "max_tokens": args.ask_tokens,
            "escalate": false,
        });
        let ask_args = ask_args.as_object().cloned().unwrap_or_default();
        phases.push(load(&clients, "ask", &ask_args, Duration::from_secs(args.ask_seconds)).await);
    }

    // Close every session, then the gateway; nothing may be left.
    for c in clients {
        let _ = c.cancel().await;
    }
    let t = Instant::now();
    while Listening::open_sessions(&sessions).await > 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_after = Listening::open_sessions(&sessions).await;
    let agents_running = child_processes().len();
    gateway.shutdown().await;
    shutdown.cancel();
    let _ = server.await;
    let t = Instant::now();
    while !child_processes().is_empty() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let agents_after = child_processes().len();

    let errors: usize = phases.iter().map(|p| p.errors).sum();
    let clean = errors == 0 && open_after == 0 && agents_after == 0;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "phases": phases,
                "sessions_open_during": open_during,
                "sessions_open_after": open_after,
                "agent_processes_during": agents_running,
                "agent_processes_after": agents_after,
                "clean": clean,
            })
        )?;
    } else {
        writeln!(
            out,
            "gateway under load: {} MCP sessions over streamable HTTP on loopback",
            args.sessions
        )?;
        let rows: Vec<Vec<String>> = phases
            .iter()
            .map(|p| {
                vec![
                    p.tool.clone(),
                    format!("{:.0} s", p.seconds),
                    p.calls.to_string(),
                    format!("{:.1}", p.calls_per_s),
                    format!("{:.1} ms", p.p50_ms),
                    format!("{:.1} ms", p.p99_ms),
                    p.errors.to_string(),
                ]
            })
            .collect();
        crate::cli::print_table(
            &mut out,
            &["TOOL", "TIME", "CALLS", "CALLS/S", "P50", "P99", "ERRORS"],
            &rows,
        )?;
        for p in phases.iter().filter(|p| p.first_error.is_some()) {
            writeln!(
                out,
                "{}: first error: {}",
                p.tool,
                p.first_error.as_deref().unwrap_or("")
            )?;
        }
        writeln!(
            out,
            "\nsessions open: {open_during} during, {open_after} after closing; agent processes: {agents_running} during, {agents_after} after shutdown"
        )?;
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every session calls `tool` back to back until `time` is up.
async fn load(
    clients: &[rmcp::service::RunningService<rmcp::RoleClient, ProbeClient>],
    tool: &str,
    arguments: &JsonObject,
    time: Duration,
) -> Phase {
    let start = Instant::now();
    let deadline = start + time;
    let runs = clients.iter().map(|c| {
        let peer = c.peer().clone();
        let request = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments.clone());
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            while Instant::now() < deadline {
                let t = Instant::now();
                match peer.call_tool(request.clone()).await {
                    Ok(r) if r.is_error != Some(true) => latencies.push(t.elapsed().as_secs_f64() * 1000.0),
                    Ok(r) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| triage::controller::text_of(&r));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (latencies, errors, first_error)
        }
    });
    let results = futures::future::join_all(runs).await;
    let seconds = start.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    latencies.sort_by(f64::total_cmp);
    let errors = results.iter().map(|r| r.1).sum();
    let first_error = results.into_iter().find_map(|r| r.2);
    Phase {
        tool: tool.to_string(),
        sessions: clients.len(),
        seconds,
        calls: latencies.len(),
        errors,
        calls_per_s: latencies.len() as f64 / seconds,
        p50_ms: triage::percentile(&latencies, 0.50),
        p99_ms: triage::percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        first_error,
    }
}

/// This process's child processes (the specialists), from /proc.
fn child_processes() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the command name, which is in parentheses:
                    // state, then the parent's pid. Zombies have exited.
                    let mut rest = s[s.rfind(')')? + 2..].split_whitespace();
                    let state = rest.next()?;
                    let ppid = rest.next()?.parse::<u32>().ok()?;
                    Some(state != "Z" && ppid == me)
                })
                .unwrap_or(false)
        })
        .collect()
}
