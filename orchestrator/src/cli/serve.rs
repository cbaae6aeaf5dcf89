//! `triage serve`: the whole team as one MCP server, over stdio (for
//! clients that start it, like Claude Desktop) or streamable HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use rmcp::ServiceExt as _;
use tokio_util::sync::CancellationToken;
use triage::gateway::http::{self, HttpOptions};
use triage::gateway::{Gateway, GatewayOptions};
use triage::workflow::runs;

use super::ask::ControllerArgs;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Serve streamable HTTP at http://ADDR/mcp instead of stdio (e.g.
    /// 127.0.0.1:7300; port 0 picks a free one). The URL is printed on
    /// stdout.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Bearer token every HTTP request must carry (`Authorization: Bearer
    /// TOKEN`); required to listen off loopback.
    #[arg(long, env = "TRIAGE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Accept this Host header too (a name, or name:port), besides
    /// loopback and the address listened on. Repeat for more.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Accept browser requests from this origin too (e.g.
    /// https://app.example.com, http://host:*), besides loopback ones.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// Largest HTTP request body, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
    max_body: usize,
    /// Tool calls one client session may have in flight; more are refused
    /// until one finishes.
    #[arg(long, default_value_t = 8, value_name = "N")]
    max_calls: usize,
    /// Offer only these tools: names, or prefixes ending in `*`
    /// (`--tools ask,route,legal_*`).
    #[arg(long = "tools", value_delimiter = ',', value_name = "NAMES")]
    tools: Vec<String>,
    /// Folder of workflow specs to offer instead of the shipped ones.
    #[arg(long, env = "TRIAGE_WORKFLOWS", value_name = "DIR")]
    workflows: Option<PathBuf>,
    #[command(flatten)]
    controller: ControllerArgs,
}

pub async fn run(ctx: &triage::Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.max_calls == 0 {
        anyhow::bail!("--max-calls must be at least 1");
    }
    // Checked before any model is loaded.
    let http_options = args.http.map(|addr| HttpOptions {
        addr,
        token: args.token.clone(),
        allow_hosts: args.allow_hosts.clone(),
        allow_origins: args.allow_origins.clone(),
        max_body: args.max_body,
    });
    if let Some(o) = &http_options {
        http::check(o)?;
    }
    let controller = Arc::new(ctx.controller(&args.controller.options(true)).await?);
    let gateway = Gateway::new(
        controller,
        &ctx.catalog,
        GatewayOptions {
            workflows: args.workflows.clone(),
            allow_tools: (!args.tools.is_empty()).then(|| args.tools.clone()),
            max_calls: args.max_calls,
            runs: runs::runs_dir(ctx.store.home()),
        },
    )?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop_signal().await;
        stop.cancel();
    });
    let result = match http_options {
        None => {
            tracing::info!("serving MCP on stdio");
            let running = gateway
                .session()
                .serve(rmcp::transport::stdio())
                .await
                .context("starting the MCP session on stdio")?;
            let token = running.cancellation_token();
            tokio::select! {
                r = running.waiting() => r.map(|_| ()).context("serving MCP on stdio"),
                () = shutdown.cancelled() => { token.cancel(); Ok(()) }
            }
        }
        Some(options) => {
            let listening = http::bind(gateway.clone(), &options, shutdown.clone()).await?;
            println!("triage gateway: http://{}{}", listening.addr, http::PATH);
            if !listening.addr.ip().is_loopback() {
                eprintln!("listening off loopback: every request needs the bearer token");
            }
            listening.serve(shutdown.clone()).await
        }
    };
    gateway.shutdown().await;
    result.map(|()| ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM where there is one.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
