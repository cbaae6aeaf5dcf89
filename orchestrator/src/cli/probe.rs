//! `triage agents probe URL`: connect to any MCP server over streamable
//! HTTP as a client, and report what works: the handshake, ping, its
//! tools, resources and prompts, and the tool calls asked for.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rmcp::model::{CallToolRequestParams, ClientRequest, JsonObject, RequestNoParam};
use serde_json::{Value, json};
use triage::probe::{self, ProbeClient};

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The server's streamable-HTTP endpoint, e.g. http://127.0.0.1:7300/mcp.
    #[arg(value_name = "URL")]
    url: String,
    /// Call this tool (repeat for more), with the arguments of --args.
    #[arg(long = "call", value_name = "TOOL")]
    calls: Vec<String>,
    /// Arguments for the --call tools, as a JSON object.
    #[arg(long, default_value = "{}", value_name = "JSON")]
    args: String,
    /// Call every tool the server lists, with arguments made from its input
    /// schema (defaults, examples, else the simplest value of each type).
    /// Only for servers where calling anything is safe.
    #[arg(long)]
    call_all: bool,
    /// Bearer token to send.
    #[arg(long, env = "TRIAGE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Time allowed for each request, in seconds.
    #[arg(long, default_value_t = 60, value_name = "S")]
    timeout: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// One thing checked.
struct Check {
    name: String,
    ok: bool,
    detail: String,
    ms: f64,
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    if !args.url.starts_with("http://") && !args.url.starts_with("https://") {
        bail!("`{}` is not an http:// or https:// URL", args.url);
    }
    let given: Value = serde_json::from_str(&args.args).context("--args must be a JSON object")?;
    let Value::Object(given) = given else {
        bail!("--args must be a JSON object, like '{{\"a\": 1}}'");
    };
    let limit = Duration::from_secs(args.timeout.max(1));
    let handler = ProbeClient::default();
    let t = Instant::now();
    let client = tokio::time::timeout(
        limit,
        probe::connect(&args.url, args.token.as_deref(), handler.clone()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{} did not complete the MCP handshake within {limit:?}", args.url))??;
    let info = client.peer_info();
    let mut checks = vec![Check {
        name: "initialize".into(),
        ok: true,
        detail: info.as_ref().map_or_else(String::new, |i| {
            let (name, version) = i
                .server_info
                .as_ref()
                .map_or(("?", "?"), |s| (s.name.as_str(), s.version.as_str()));
            format!("{name} {version}, protocol {}", i.protocol_version)
        }),
        ms: t.elapsed().as_secs_f64() * 1000.0,
    }];
    let caps = info.as_ref().map(|i| i.capabilities.clone()).unwrap_or_default();
    let peer = client.peer().clone();

    let t = Instant::now();
    let ping = ClientRequest::PingRequest(RequestNoParam {
        method: Default::default(),
        extensions: Default::default(),
    });
    let r = within(limit, peer.send_request(ping)).await;
    checks.push(outcome("ping", t, r.map(|_| String::new())));

    let mut tools = Vec::new();
    if caps.tools.is_some() {
        let t = Instant::now();
        let r = within(limit, peer.list_all_tools()).await;
        if let Ok(list) = &r {
            tools = list.clone();
        }
        checks.push(outcome(
            "tools/list",
            t,
            r.map(|l| {
                l.iter()
                    .map(|t| t.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        ));
    }
    if caps.resources.is_some() {
        let t = Instant::now();
        let r = within(limit, peer.list_all_resources()).await;
        checks.push(outcome(
            "resources/list",
            t,
            r.map(|l| format!("{} resources", l.len())),
        ));
    }
    if caps.prompts.is_some() {
        let t = Instant::now();
        let r = within(limit, peer.list_all_prompts()).await;
        checks.push(outcome(
            "prompts/list",
            t,
            r.map(|l| l.iter().map(|p| p.name.clone()).collect::<Vec<_>>().join(", ")),
        ));
    }

    // The calls: those asked for, then (with --call-all) every listed tool.
    let mut calls: Vec<(String, JsonObject)> =
        args.calls.iter().map(|c| (c.clone(), given.clone())).collect();
    if args.call_all {
        for t in &tools {
            if !args.calls.iter().any(|c| c == t.name.as_ref()) {
                calls.push((t.name.to_string(), probe::sample_arguments(&t.input_schema)));
            }
        }
    }
    let mut calls_ok = true;
    for (name, arguments) in calls {
        let t = Instant::now();
        let request = CallToolRequestParams::new(name.clone()).with_arguments(arguments);
        let r = within(limit, peer.call_tool(request)).await.and_then(|r| {
            let text = triage::controller::text_of(&r);
            if r.is_error == Some(true) {
                Err(format!("tool error: {}", super::shorten(&text, 200)))
            } else {
                Ok(super::shorten(&text, 120))
            }
        });
        calls_ok &= r.is_ok();
        checks.push(outcome(&format!("call {name}"), t, r));
    }
    let _ = client.cancel().await;
    let progress = handler.progress.load(Ordering::Relaxed);
    let elicitations = handler.elicitations.load(Ordering::Relaxed);

    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<Value> = checks
            .iter()
            .map(|c| json!({ "check": c.name, "ok": c.ok, "detail": c.detail, "ms": c.ms }))
            .collect();
        writeln!(
            out,
            "{}",
            json!({ "url": args.url, "checks": list, "progress_notifications": progress, "elicitations": elicitations, "ok": calls_ok })
        )?;
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    if c.ok { "ok" } else { "FAILED" }.into(),
                    format!("{:.1} ms", c.ms),
                    c.detail.clone(),
                ]
            })
            .collect();
        super::print_table(&mut out, &["CHECK", "RESULT", "TIME", "DETAIL"], &rows)?;
        if progress + elicitations > 0 {
            writeln!(
                out,
                "\n{progress} progress notification(s); {elicitations} elicitation(s) answered with their defaults"
            )?;
        }
    }
    // The handshake worked; the exit status says whether the calls did.
    Ok(if calls_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A request's result within `limit`, its error as text.
async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, request).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

fn outcome(name: &str, t: Instant, r: Result<String, String>) -> Check {
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    match r {
        Ok(detail) => Check {
            name: name.into(),
            ok: true,
            detail,
            ms,
        },
        Err(detail) => Check {
            name: name.into(),
            ok: false,
            detail,
            ms,
        },
    }
}
