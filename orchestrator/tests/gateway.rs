//! The gateway (`triage serve`) as a real process, reached by an rmcp
//! client over stdio and streamable HTTP, and by raw HTTP requests for the
//! security checks.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam, ClientRequest,
    GetPromptRequestParams, ReadResourceRequestParams, ResourceContents, SubscribeRequestParams,
};
use rmcp::service::{PeerRequestOptions, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use triage::probe::{self, ProbeClient};

#[path = "common/outside.rs"]
mod outside;
use outside::Served;

const TRIAGE: &str = env!("CARGO_BIN_EXE_triage");
const TOKEN: &str = "test-token-0123456789abcdef";

fn env(cmd: &mut Command, home: &Path) {
    cmd.env("TRIAGE_RUNS", home.join("runs"))
        .env("TRIAGE_STORE", home.join("store"))
        .env_remove("TRIAGE_AGENTS")
        .env_remove("TRIAGE_REGISTRY")
        .env_remove("TRIAGE_TOKEN")
        .env_remove("TRIAGE_WORKFLOWS");
}

fn serve_http(home: &Path, args: &[&str]) -> Served {
    outside::serve_gateway(home, args)
}

async fn stdio_client(home: &Path) -> RunningService<RoleClient, ProbeClient> {
    let cmd = tokio::process::Command::new(TRIAGE).configure(|c| {
        c.arg("serve")
            .env("TRIAGE_RUNS", home.join("runs"))
            .env("TRIAGE_STORE", home.join("store"))
            .env_remove("TRIAGE_AGENTS")
            .env_remove("TRIAGE_REGISTRY")
            .env_remove("TRIAGE_WORKFLOWS");
    });
    ProbeClient::default()
        .serve(TokioChildProcess::new(cmd).unwrap())
        .await
        .unwrap()
}

async fn call(client: &RunningService<RoleClient, ProbeClient>, tool: &str, args: Value) -> CallToolResult {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn ok(r: &CallToolResult) -> &Value {
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.as_ref().expect("structured content")
}

fn error_text(r: &CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "expected a tool error: {r:?}");
    triage::controller::text_of(r)
}

fn resource_text(r: &rmcp::model::ReadResourceResult) -> String {
    match &r.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("not text: {other:?}"),
    }
}

/// A workflow of deterministic tools only, quick to run.
const SPEC: &str = r#"
name: language-check
description: Detect a snippet's language, then review it.
version: "1"
inputs:
  code: { type: string, description: The code }
steps:
  - id: detect
    agent: code
    tool: detect_language
    with: { code: "{{ inputs.code }}" }
  - id: review
    agent: code
    tool: review
    with: { code: "{{ inputs.code }}", language: "{{ steps.detect.output.language }}" }
outputs:
  language: "{{ steps.detect.output.language }}"
  findings: "{{ steps.review.output.findings | length }}"
"#;

const PYTHON: &str = "import os\n\ndef wipe(path):\n    password = 'hunter2'\n    os.system('rm -rf ' + path)\n    return None\n";

#[tokio::test]
async fn over_stdio_the_gateway_serves_tools_resources_and_prompts() {
    let home = tempfile::tempdir().unwrap();
    let client = stdio_client(home.path()).await;
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "triage");
    assert_eq!(info.protocol_version.as_str(), "2025-11-25");

    // Tools: the gateway's own and every specialist tool, namespaced with
    // names clients accept and the specialists' schemas.
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    let valid = regex::Regex::new("^[a-zA-Z0-9_-]{1,64}$").unwrap();
    assert!(names.iter().all(|n| valid.is_match(n)), "{names:?}");
    for n in [
        "ask",
        "route",
        "run_workflow",
        "get_run",
        "list_agents",
        "legal_classify_clauses",
        "finance_sentiment",
        "code_review",
        "general_ask",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(
        tools
            .iter()
            .all(|t| t.description.as_deref().is_some_and(|d| !d.is_empty()))
    );
    let sentiment = tools.iter().find(|t| t.name == "finance_sentiment").unwrap();
    let out = sentiment
        .output_schema
        .as_ref()
        .expect("the output schema passes through");
    assert!(out["properties"]["label"].is_object(), "{out:?}");
    assert!(sentiment.input_schema["properties"]["text"].is_object());

    // A specialist tool, forwarded to its agent.
    let r = call(&client, "code_detect_language", json!({ "code": PYTHON })).await;
    assert_eq!(ok(&r)["language"], "python");
    // A failure inside the specialist is a tool error with the reason, and
    // the gateway goes on serving.
    let r = call(&client, "legal_classify_clauses", json!({ "text": "  " })).await;
    assert!(error_text(&r).contains("empty"), "{r:?}");
    let r = call(
        &client,
        "finance_extract_amounts",
        json!({ "text": "Revenue was $3.4 million." }),
    )
    .await;
    assert_eq!(ok(&r)["amounts"][0]["value"], 3.4e6);
    // An unknown tool is a protocol error naming it.
    let e = client
        .call_tool(CallToolRequestParams::new("legal_nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("legal_nope"), "{e}");

    let r = call(&client, "list_agents", json!({})).await;
    let agents: Vec<&str> = ok(&r)["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["legal", "finance", "code", "general"]);
    let code = &ok(&r)["agents"][2];
    assert_eq!(code["connected"], true, "it answered a call: {code}");
    assert!(code["tools"].as_array().unwrap().contains(&json!("code_review")));

    // Resources: model cards, workflow specs, and runs as a template.
    let resources = client.list_all_resources().await.unwrap();
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert!(uris.contains(&"triage://agents/legal/model-card"), "{uris:?}");
    assert!(uris.contains(&"triage://workflows/contract-review"), "{uris:?}");
    let card = client
        .read_resource(ReadResourceRequestParams::new("triage://agents/legal/model-card"))
        .await
        .unwrap();
    let card: Value = serde_json::from_str(&resource_text(&card)).unwrap();
    assert_eq!(card["agent"], "legal");
    let spec = client
        .read_resource(ReadResourceRequestParams::new("triage://workflows/earnings-call"))
        .await
        .unwrap();
    assert!(resource_text(&spec).contains("name: earnings-call"));
    let templates = client.list_all_resource_templates().await.unwrap();
    assert_eq!(templates[0].uri_template, "triage://runs/{id}");
    let e = client
        .read_resource(ReadResourceRequestParams::new("triage://runs/nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no run nope"), "{e}");

    // Prompts: one per workflow, its inputs as arguments.
    let prompts = client.list_all_prompts().await.unwrap();
    let review = prompts.iter().find(|p| p.name == "contract-review").unwrap();
    let args = review.arguments.as_ref().unwrap();
    assert!(
        args.iter()
            .any(|a| a.name == "contract" && a.required == Some(true))
    );
    let mut params = GetPromptRequestParams::new("contract-review");
    params.arguments = Some(
        json!({ "contract": "1. Term. This agreement lasts two years." })
            .as_object()
            .unwrap()
            .clone(),
    );
    let p = client.get_prompt(params).await.unwrap();
    let text = p.messages[0]
        .content
        .as_text()
        .expect("a text message")
        .text
        .clone();
    assert!(
        text.contains("run_workflow") && text.contains("two years"),
        "{text}"
    );
    let e = client
        .get_prompt(GetPromptRequestParams::new("contract-review"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs the argument `contract`"), "{e}");
    client.cancel().await.unwrap();
}

// Logging is part of 2025-11-25; rmcp marks it deprecated for the revision
// after.
#[allow(deprecated)]
#[tokio::test]
async fn over_http_ask_and_run_workflow_report_progress_and_runs_are_resources() {
    let home = tempfile::tempdir().unwrap();
    let served = serve_http(home.path(), &[]);
    let handler = ProbeClient::default();
    let client = probe::connect(&served.url, None, handler.clone()).await.unwrap();

    // ask: routed, answered, with its confidence and the specialist's
    // progress passed on.
    let r = call(
        &client,
        "ask",
        json!({ "task": "What does the Python expression len([1, 2, 3]) return?", "max_tokens": 24, "escalate": false }),
    )
    .await;
    let answer = ok(&r);
    assert_eq!(answer["route"]["agent"], "code", "{answer}");
    assert!(answer["confidence"].as_f64().is_some(), "{answer}");
    assert!(!answer["answer"].as_str().unwrap().is_empty());
    assert!(
        handler.progress.load(Ordering::Relaxed) > 0,
        "progress while generating"
    );

    let r = call(
        &client,
        "route",
        json!({ "task": "Does this NDA's non-compete clause hold up in California?" }),
    )
    .await;
    assert_eq!(ok(&r)["agent"], "legal");

    // Log messages, once the client asks for them.
    client
        .peer()
        .set_level(rmcp::model::SetLevelRequestParams::new(
            rmcp::model::LoggingLevel::Info,
        ))
        .await
        .unwrap();

    // run_workflow with an inline spec: progress per step, the run id and
    // outputs back, and the run readable as a resource.
    let before = handler.progress.load(Ordering::Relaxed);
    let r = call(
        &client,
        "run_workflow",
        json!({ "spec": SPEC, "inputs": { "code": PYTHON } }),
    )
    .await;
    let run = ok(&r);
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["outputs"]["language"], "python");
    assert!(run["outputs"]["findings"].as_u64().unwrap() >= 1, "{run}");
    assert!(
        handler.progress.load(Ordering::Relaxed) >= before + 2,
        "progress per step"
    );
    let id = run["run_id"].as_str().unwrap().to_string();
    let uri = run["resource"].as_str().unwrap().to_string();
    assert_eq!(uri, format!("triage://runs/{id}"));
    let read = client
        .read_resource(ReadResourceRequestParams::new(uri.clone()))
        .await
        .unwrap();
    let view: Value = serde_json::from_str(&resource_text(&read)).unwrap();
    assert_eq!(view["status"], "completed");
    let steps: Vec<&str> = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["detect", "review"]);
    let got = call(&client, "get_run", json!({ "id": id })).await;
    assert_eq!(ok(&got)["run"]["outputs"]["language"], "python");
    let listed = client.list_all_resources().await.unwrap();
    assert!(listed.iter().any(|r| r.uri == uri), "the run is listed");
    // Clients hear of the change (the run started and ended).
    let t = Instant::now();
    while handler.resource_changes.load(Ordering::Relaxed) < 2 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(handler.resource_changes.load(Ordering::Relaxed) >= 2);
    // The run's start and end were logged to this session.
    assert!(
        handler.log_messages.load(Ordering::Relaxed) >= 2,
        "run_started and run_ended"
    );
    // Completion offers the run's id for the run template.
    let done = client
        .peer()
        .complete_resource_argument("triage://runs/{id}", "id", &id[..8], None)
        .await
        .unwrap();
    assert_eq!(done.values, vec![id.clone()]);
    let none = client
        .peer()
        .complete_resource_argument("triage://runs/{id}", "id", "x", None)
        .await
        .unwrap();
    assert!(none.values.is_empty());
    // The run is in the shared runs folder, as `triage runs` sees it.
    let o = Command::new(TRIAGE)
        .args(["runs", "show", &id, "--json"])
        .env("TRIAGE_RUNS", home.path().join("runs"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Mistakes come back as tool errors that say what to do.
    let r = call(&client, "run_workflow", json!({ "workflow": "nope" })).await;
    assert!(error_text(&r).contains("contract-review"), "{r:?}");
    let r = call(
        &client,
        "run_workflow",
        json!({ "spec": "name: x\nversion: \"1\"\nsteps:\n  - id: a\n    agent: code\n    tool: nope\n" }),
    )
    .await;
    let e = error_text(&r);
    assert!(e.contains("inline.yaml:6:") && e.contains("nope"), "{e}");
    let r = call(&client, "run_workflow", json!({ "spec": SPEC })).await;
    assert!(error_text(&r).contains("needs the input `code`"), "{r:?}");
    let r = call(&client, "ask", json!({ "task": "hi", "min_confidence": 2.0 })).await;
    assert!(error_text(&r).contains("between 0 and 1"), "{r:?}");
    client.cancel().await.unwrap();
}

// resources/subscribe is part of 2025-11-25; rmcp marks it deprecated for
// the revision after.
#[allow(deprecated)]
#[tokio::test]
async fn cancelling_run_workflow_cancels_the_run_and_the_gateway_keeps_serving() {
    let home = tempfile::tempdir().unwrap();
    let served = serve_http(home.path(), &[]);
    let handler = ProbeClient::default();
    let client = probe::connect(&served.url, None, handler.clone()).await.unwrap();
    let spec = r#"
name: long-story
version: "1"
steps:
  - id: story
    agent: general
    prompt: "Write a very long story about a lighthouse keeper, chapter by chapter."
    max_tokens: 3000
    min_confidence: 0
"#;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("run_workflow")
            .with_arguments(json!({ "spec": spec, "inputs": {} }).as_object().unwrap().clone()),
    ));
    let handle = client
        .peer()
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    // Wait until the run is under way, then cancel the call.
    let runs = home.path().join("runs");
    let t = Instant::now();
    while triage::workflow::runs::list(&runs).is_empty() && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        triage::workflow::runs::list(&runs)[0].status,
        triage::workflow::runs::RunStatus::Running
    );
    // Another session watches the run's resource.
    let watcher = ProbeClient::default();
    let watching = probe::connect(&served.url, None, watcher.clone()).await.unwrap();
    let id = triage::workflow::runs::list(&runs)[0].meta["id"]
        .as_str()
        .unwrap()
        .to_string();
    watching
        .subscribe(SubscribeRequestParams::new(format!("triage://runs/{id}")))
        .await
        .unwrap();
    let e = watching
        .subscribe(SubscribeRequestParams::new("triage://runs/nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no run nope"), "{e}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .peer()
        .notify_cancelled(CancelledNotificationParam::new(
            Some(handle.id.clone()),
            Some("changed my mind".into()),
        ))
        .await
        .unwrap();
    drop(handle);
    // The run is recorded as cancelled.
    let t = Instant::now();
    let status = loop {
        let list = triage::workflow::runs::list(&runs);
        let status = list.first().map(|r| r.status);
        if status.is_some_and(|s| s != triage::workflow::runs::RunStatus::Running)
            || t.elapsed() > Duration::from_secs(30)
        {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, Some(triage::workflow::runs::RunStatus::Cancelled));
    // The watcher heard that the run changed.
    let t = Instant::now();
    while watcher.resource_updates.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        watcher.resource_updates.load(Ordering::Relaxed) >= 1,
        "resources/updated for the run"
    );
    watching.cancel().await.unwrap();
    // And the gateway serves the next call.
    let r = call(&client, "code_detect_language", json!({ "code": PYTHON })).await;
    assert_eq!(ok(&r)["language"], "python");
    client.cancel().await.unwrap();
}

/// The status code of a raw HTTP request to the gateway.
fn status(url: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("POST {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(name));
    if !has("host") {
        request.push_str(&format!("Host: {authority}\r\n"));
    }
    for (h, v) in headers {
        request.push_str(&format!("{h}: {v}\r\n"));
    }
    request.push_str(&format!(
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(request.as_bytes()).unwrap();
    let _ = stream.write_all(body.as_bytes());
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

#[test]
fn off_loopback_the_gateway_refuses_to_start_without_a_token() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(TRIAGE);
        cmd.arg("serve").args(args);
        env(&mut cmd, home.path());
        cmd.output().unwrap()
    };
    let o = run(&["--http", "0.0.0.0:0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0") && err.contains("--token"),
        "{err}"
    );
    let o = run(&["--http", "0.0.0.0:0", "--token", "short"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("too short"));
    let o = run(&["--http", "127.0.0.1:0", "--max-body", "10"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("too small"));
    let o = run(&["--tools", "ask,nope_*"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`nope_*`, which matches no tool"), "{err}");
}

#[tokio::test]
async fn tokens_hosts_origins_and_body_size_are_checked() {
    let home = tempfile::tempdir().unwrap();
    let served = serve_http(home.path(), &["--token", TOKEN, "--max-body", "4096"]);
    let url = served.url.clone();
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    assert_eq!(status(&url, &[], INITIALIZE), 401, "no token");
    assert_eq!(
        status(
            &url,
            &[("Authorization", "Bearer wrong-token-0123456789abc")],
            INITIALIZE
        ),
        401,
        "wrong token"
    );
    assert_eq!(status(&url, &[auth], INITIALIZE), 200);
    // DNS rebinding: a foreign Host or a foreign browser Origin.
    assert_eq!(
        status(&url, &[auth, ("Host", "evil.example.com")], INITIALIZE),
        403
    );
    assert_eq!(
        status(&url, &[auth, ("Origin", "http://evil.example.com")], INITIALIZE),
        403
    );
    assert_eq!(
        status(&url, &[auth, ("Origin", "http://localhost:5173")], INITIALIZE),
        200
    );
    // A body over the limit.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"{}","version":"1"}}}}}}"#,
        "x".repeat(8000)
    );
    assert_eq!(status(&url, &[auth], &big), 413);
    // A real client with the token works; without it, it cannot connect.
    let client = probe::connect(&url, Some(TOKEN), ProbeClient::default())
        .await
        .unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "ask"));
    client.cancel().await.unwrap();
    assert!(probe::connect(&url, None, ProbeClient::default()).await.is_err());
}

#[tokio::test]
async fn calls_per_session_are_capped_and_tools_can_be_limited() {
    let home = tempfile::tempdir().unwrap();
    let served = serve_http(home.path(), &["--max-calls", "1", "--tools", "ask,code_*"]);
    let client = probe::connect(&served.url, None, ProbeClient::default())
        .await
        .unwrap();
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ask",
            "code_ask",
            "code_code_metrics",
            "code_detect_language",
            "code_explain",
            "code_review"
        ]
    );
    let e = client
        .call_tool(CallToolRequestParams::new("legal_split_clauses"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tool `legal_split_clauses`"), "{e}");

    // One call in flight; a second at the same time is refused.
    let slow = call(
        &client,
        "ask",
        json!({ "task": "Explain what a Python list comprehension is.", "max_tokens": 120, "escalate": false }),
    );
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        call(&client, "code_detect_language", json!({ "code": PYTHON })).await
    };
    let (slow, second) = tokio::join!(slow, second);
    ok(&slow);
    assert!(
        error_text(&second).contains("too many calls in flight"),
        "{second:?}"
    );
    // Once it finished, the next call goes through.
    let r = call(&client, "code_detect_language", json!({ "code": PYTHON })).await;
    assert_eq!(ok(&r)["language"], "python");
    client.cancel().await.unwrap();
}

/// The README's Claude Desktop configuration starts a gateway that an MCP
/// client can use.
#[tokio::test]
async fn the_readme_claude_desktop_snippet_works() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme
        .find("claude_desktop_config.json")
        .expect("the README has a Claude Desktop snippet");
    let block = &readme[start..];
    let open = block.find("```json").unwrap() + "```json".len();
    let close = open + block[open..].find("```").unwrap();
    let config: Value = serde_json::from_str(&block[open..close]).unwrap();
    let server = &config["mcpServers"]["triage"];
    assert_eq!(server["command"], "triage");
    let args: Vec<String> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_path_buf();
    let cmd = tokio::process::Command::new(TRIAGE).configure(move |c| {
        c.args(&args)
            .env("TRIAGE_RUNS", h.join("runs"))
            .env("TRIAGE_STORE", h.join("store"));
    });
    let client = ProbeClient::default()
        .serve(TokioChildProcess::new(cmd).unwrap())
        .await
        .unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "run_workflow"));
    client.cancel().await.unwrap();
}

/// The load bench runs end to end and leaves nothing behind (its figures
/// are for people; this only checks that it works).
#[test]
fn the_gateway_bench_runs_clean() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(TRIAGE);
    cmd.args([
        "bench",
        "gateway",
        "--sessions",
        "3",
        "--seconds",
        "1",
        "--ask-seconds",
        "1",
        "--ask-tokens",
        "2",
        "--json",
    ]);
    env(&mut cmd, home.path());
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(r["sessions_open_after"], 0);
    assert_eq!(r["agent_processes_after"], 0);
    assert!(r["phases"][0]["calls"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["phases"][1]["tool"], "ask");
    let mut cmd = Command::new(TRIAGE);
    cmd.args(["bench", "gateway", "--sessions", "0"]);
    env(&mut cmd, home.path());
    let o = cmd.output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 1"));
}

#[tokio::test]
async fn cancelling_ask_stops_the_generation() {
    let home = tempfile::tempdir().unwrap();
    let served = serve_http(home.path(), &[]);
    let handler = ProbeClient::default();
    let client = probe::connect(&served.url, None, handler.clone()).await.unwrap();
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("ask").with_arguments(
            json!({ "task": "Write a very long story about a lighthouse keeper, chapter by chapter.", "domain": "general", "max_tokens": 3000, "escalate": false })
                .as_object()
                .unwrap()
                .clone(),
        ),
    ));
    let handle = client
        .peer()
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let t = Instant::now();
    while handler.progress.load(Ordering::Relaxed) < 3 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        handler.progress.load(Ordering::Relaxed) >= 3,
        "the specialist's progress reaches the client"
    );
    client
        .peer()
        .notify_cancelled(CancelledNotificationParam::new(Some(handle.id.clone()), None))
        .await
        .unwrap();
    drop(handle);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stopped = handler.progress.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        handler.progress.load(Ordering::Relaxed),
        stopped,
        "no progress after the cancellation"
    );
    // The model is free for the next task at once.
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        call(
            &client,
            "ask",
            json!({ "task": "Say hi.", "domain": "general", "max_tokens": 4, "escalate": false }),
        ),
    )
    .await
    .expect("the next ask is served");
    assert!(ok(&r)["tokens"].as_u64().unwrap() <= 4);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_workflow_folder_replaces_the_shipped_specs() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("check.yaml"), SPEC).unwrap();
    std::fs::write(
        dir.join("broken.yaml"),
        "name: broken\nversion: \"1\"\nsteps:\n  - id: a\n    agent: nobody\n    tool: x\n",
    )
    .unwrap();
    let served = serve_http(home.path(), &["--workflows", dir.to_str().unwrap()]);
    let client = probe::connect(&served.url, None, ProbeClient::default())
        .await
        .unwrap();
    let prompts: Vec<String> = client
        .list_all_prompts()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        prompts,
        ["language-check"],
        "only specs that validate become prompts"
    );
    let uris: Vec<String> = client
        .list_all_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.uri)
        .collect();
    assert!(
        uris.contains(&"triage://workflows/broken".to_string()),
        "{uris:?}"
    );
    let r = call(&client, "run_workflow", json!({ "workflow": "broken" })).await;
    let e = error_text(&r);
    assert!(e.contains("does not validate") && e.contains("nobody"), "{e}");
    let r = call(
        &client,
        "run_workflow",
        json!({ "workflow": "language-check", "inputs": { "code": PYTHON } }),
    )
    .await;
    assert_eq!(ok(&r)["outputs"]["language"], "python");
    client.cancel().await.unwrap();

    let mut cmd = Command::new(TRIAGE);
    cmd.args(["serve", "--workflows", "/nonexistent/workflows"]);
    env(&mut cmd, home.path());
    let o = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the workflow folder"));
}
