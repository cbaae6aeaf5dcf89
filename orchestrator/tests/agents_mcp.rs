//! Specialists as real child processes (`triage agent serve NAME`), called
//! through an rmcp client over stdio.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, GetPromptRequestParams, ProgressNotificationParam,
    ReadResourceRequestParams, ResourceContents,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

async fn spawn(name: &str) -> RunningService<RoleClient, ()> {
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_triage")).configure(|c| {
        c.args(["agent", "serve", name]).env_remove("TRIAGE_AGENTS");
    });
    ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap()
}

async fn call<S: rmcp::service::Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap()
}

fn structured(r: &CallToolResult) -> &Value {
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.as_ref().expect("structured content")
}

#[tokio::test]
async fn the_code_specialist_serves_its_tools_with_schemas() {
    let client = spawn("code").await;
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "triage-code");
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["ask", "code_metrics", "detect_language", "explain", "review"]
    );
    assert!(
        tools.iter().all(|t| t.output_schema.is_some()),
        "every tool promises structured output"
    );

    let r = call(
        &client,
        "detect_language",
        json!({ "code": "fn main() {\n    let mut x = vec![1];\n    println!(\"{:?}\", x);\n}\n" }),
    )
    .await;
    assert_eq!(structured(&r)["language"], "rust");
    let text = r.content[0].as_text().unwrap().text.clone();
    assert!(text.contains("rust"), "also readable as text: {text}");
    let r = call(
        &client,
        "code_metrics",
        json!({ "code": "def f(x):\n    if x:\n        return 1\n    return 0\n" }),
    )
    .await;
    assert_eq!(structured(&r)["cyclomatic_complexity"], 2);

    let r = call(
        &client,
        "ask",
        json!({ "question": "What does `len(xs)` return in Python?", "max_tokens": 40 }),
    )
    .await;
    let v = structured(&r);
    assert!(!v["answer"].as_str().unwrap().is_empty());
    let confidence = v["confidence"].as_f64().unwrap();
    assert!(confidence > 0.0 && confidence <= 1.0);
    assert_eq!(v["agent"], "code");
    assert_eq!(v["model"], "smollm2-135m-instruct");

    let r = call(
        &client,
        "review",
        json!({ "code": "def add(x, items=[]):\n    try:\n        items.append(x)\n    except:\n        pass\n    return items\n" }),
    )
    .await;
    let v = structured(&r);
    assert_eq!(v["language"], "python");
    let findings: Vec<(u64, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["line"].as_u64().unwrap(), f["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(findings, [(1, "mutable-default"), (4, "bare-except")]);
    assert!(v["findings"][0]["reason"].as_str().unwrap().contains("shared"));

    let r = call(
        &client,
        "explain",
        json!({ "code": "def square(x):\n    return x * x\n", "max_tokens": 24 }),
    )
    .await;
    let v = structured(&r);
    assert_eq!(v["language"], "python");
    assert!(!v["explanation"].as_str().unwrap().is_empty());
    assert_eq!(v["metrics"]["functions"], 1);
    assert!(v["tokens"].as_u64().unwrap() <= 24);

    // Its prompt templates and its model card.
    let prompts = client.list_all_prompts().await.unwrap();
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ask", "explain"]);
    let p = client
        .get_prompt(
            GetPromptRequestParams::new("explain").with_arguments(
                json!({ "code": "print(1)", "language": "python" })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    let text = serde_json::to_string(&p.messages[0].content).unwrap();
    assert!(text.contains("print(1)") && text.contains("python"), "{text}");
    let err = client
        .get_prompt(GetPromptRequestParams::new("ask"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs the argument `question`"), "{err}");
    let card = model_card(&client, "code").await;
    assert_eq!(card["model"]["name"], "smollm2-135m-instruct");
    assert_eq!(
        card["model"]["files"][0]["sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(card["model"]["licence"], "Apache-2.0");
    assert_eq!(card["model"]["parameters"], "135M");
    assert_eq!(card["measured"][0]["tool"], "detect_language");
    client.cancel().await.unwrap();
}

async fn model_card<S: rmcp::service::Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
    name: &str,
) -> Value {
    let resources = client.list_all_resources().await.unwrap();
    let uri = format!("triage://agents/{name}/model-card");
    assert_eq!(resources[0].uri, uri);
    let r = client
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .unwrap();
    let ResourceContents::TextResourceContents { text, mime_type, .. } = &r.contents[0] else {
        panic!("a text resource: {r:?}");
    };
    assert_eq!(mime_type.as_deref(), Some("application/json"));
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn finance_and_legal_specialists_answer_with_structured_results() {
    let finance = spawn("finance").await;
    let r = call(
        &finance,
        "extract_amounts",
        json!({ "text": "Revenue rose 12% to EUR 13.1 mn in Q3 2025." }),
    )
    .await;
    let v = structured(&r);
    assert_eq!(v["amounts"][1]["value"], 13.1e6);
    assert_eq!(v["periods"][0]["year"], 2025);
    let r = call(
        &finance,
        "screen_transaction",
        json!({ "amount": 9000, "timestamp": "2025-03-12T03:10:00", "payee": "New Ltd", "country": "NG", "home_country": "FI",
                "history": [{ "amount": 40, "timestamp": "2025-03-01T12:00:00", "payee": "Grocer" },
                            { "amount": 42, "timestamp": "2025-03-02T12:00:00", "payee": "Grocer" },
                            { "amount": 45, "timestamp": "2025-03-03T12:00:00", "payee": "Grocer" }] }),
    )
    .await;
    assert_eq!(structured(&r)["level"], "high");
    let r = call(
        &finance,
        "sentiment",
        json!({ "text": "Operating profit fell to EUR 3.2 mn from EUR 7.9 mn a year earlier." }),
    )
    .await;
    let v = structured(&r);
    assert_eq!(v["label"], "negative");
    assert!(v["confidence"].as_f64().unwrap() > 0.5);
    assert_eq!(v["scores"].as_array().unwrap().len(), 3);
    assert_eq!(v["model"], "all-minilm-l6-v2");
    let card = model_card(&finance, "finance").await;
    assert_eq!(card["encoder"]["name"], "all-minilm-l6-v2");
    assert_eq!(card["label_sets"][0], "sentiment");
    finance.cancel().await.unwrap();

    let legal = spawn("legal").await;
    let r = call(
        &legal,
        "split_clauses",
        json!({ "text": "1. Term. Two years.\n2. Governing Law. New York law applies.\n" }),
    )
    .await;
    assert_eq!(structured(&r)["clauses"].as_array().unwrap().len(), 2);
    let r = call(
        &legal,
        "extract_terms",
        json!({ "text": "Either party may terminate on thirty (30) days' written notice." }),
    )
    .await;
    assert_eq!(structured(&r)["notice_periods"][0]["value"], 30);
    let r = call(
        &legal,
        "classify_clauses",
        json!({ "text": "1. Governing Law. This Agreement is governed by the laws of the State of Delaware.\n\n2. Insurance. Supplier shall maintain general liability insurance of at least $1,000,000 per occurrence.\n\n3. Assignment. Neither party may assign this Agreement without the prior written consent of the other party.\n" }),
    )
    .await;
    let v = structured(&r);
    let labels: Vec<&str> = v["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Governing Law", "Insurance", "Anti-Assignment"]);
    assert!(v["clauses"][0]["confidence"].as_f64().unwrap() > 0.5);
    assert_eq!(v["clauses"][1]["number"], "2");
    let r = call(
        &legal,
        "classify_clauses",
        json!({ "text": "Licensee shall pay a royalty of 5% of Net Sales.", "split": false }),
    )
    .await;
    assert_eq!(structured(&r)["clauses"][0]["label"], "Revenue/Profit Sharing");
    legal.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_an_error_a_person_can_act_on_and_the_server_keeps_serving() {
    let client = spawn("finance").await;
    // Empty question: a tool error with the reason.
    let r = call(&client, "ask", json!({ "question": "  " })).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        r.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("`question` is empty")
    );
    // A transaction missing a field, or a wrong type: an error naming it.
    let r = call(
        &client,
        "screen_transaction",
        json!({ "amount": 5, "payee": "x", "country": "FI" }),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        r.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("missing field `timestamp`"),
        "{r:?}"
    );
    let r = call(&client, "extract_amounts", json!({ "text": 42 })).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        r.content[0].as_text().unwrap().text.contains("expected a string"),
        "{r:?}"
    );
    // A bad timestamp: a tool error naming the field.
    let r = call(
        &client,
        "screen_transaction",
        json!({ "amount": 5, "timestamp": "yesterday", "payee": "x", "country": "FI" }),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert!(r.content[0].as_text().unwrap().text.contains("timestamp"));
    // A tool of another specialist.
    let err = client
        .call_tool(CallToolRequestParams::new("detect_language"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tool not found"), "{err}");
    // A question beyond the model's context: refused with what to do.
    let long = "word ".repeat(9000);
    let r = call(&client, "ask", json!({ "question": long })).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        r.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("shorten the prompt"),
        "{r:?}"
    );
    // Empty text for a label tool.
    let r = call(&client, "sentiment", json!({ "text": "" })).await;
    assert_eq!(r.is_error, Some(true));
    assert!(r.content[0].as_text().unwrap().text.contains("`text` is empty"));
    // An unknown resource or prompt: a protocol error naming what exists.
    let err = client
        .read_resource(ReadResourceRequestParams::new("triage://agents/legal/model-card"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("triage://agents/finance/model-card"), "{err}");
    let err = client
        .get_prompt(GetPromptRequestParams::new("summarise"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no prompt `summarise`") && err.contains("ask"),
        "{err}"
    );
    // Still serving.
    let r = call(&client, "extract_amounts", json!({ "text": "$5" })).await;
    assert_eq!(structured(&r)["amounts"][0]["value"], 5.0);
    client.cancel().await.unwrap();
}

#[test]
fn an_unknown_specialist_is_refused_with_the_known_names() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["agent", "serve", "medical"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no specialist called `medical`") && err.contains("legal"),
        "{err}"
    );
}

/// A client that counts the progress notifications it receives.
#[derive(Debug, Clone, Default)]
struct CountProgress(Arc<AtomicUsize>);

impl ClientHandler for CountProgress {
    async fn on_progress(
        &self,
        _params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn generation_reports_progress_and_stops_when_cancelled() {
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_triage")).configure(|c| {
        c.args(["agent", "serve", "general"]).env_remove("TRIAGE_AGENTS");
    });
    let progress = CountProgress::default();
    let client = progress
        .clone()
        .serve(TokioChildProcess::new(cmd).unwrap())
        .await
        .unwrap();
    let r = call(
        &client,
        "ask",
        json!({ "question": "Name three colours.", "max_tokens": 20 }),
    )
    .await;
    assert!(structured(&r)["tokens"].as_u64().unwrap() > 0);
    assert!(progress.0.load(Ordering::SeqCst) >= 1, "progress was reported");

    // A long answer abandoned after a moment: the client sends
    // notifications/cancelled, and generation stops.
    let before = progress.0.load(Ordering::SeqCst);
    let long = call(
        &client,
        "ask",
        json!({ "question": "Write a very long story about a lighthouse keeper, chapter by chapter.", "max_tokens": 3000 }),
    );
    assert!(tokio::time::timeout(Duration::from_secs(3), long).await.is_err());
    assert!(progress.0.load(Ordering::SeqCst) > before, "it was generating");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = progress.0.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        progress.0.load(Ordering::SeqCst),
        stopped,
        "no progress after the cancellation"
    );
    // The model is free for the next request.
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        call(&client, "ask", json!({ "question": "Say hi.", "max_tokens": 4 })),
    )
    .await
    .expect("the next request is served");
    assert!(structured(&r)["tokens"].as_u64().unwrap() <= 4);
    client.cancel().await.unwrap();
}

/// Resident memory of a process in MiB (Linux).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Starts `triage agent serve NAMES --http 127.0.0.1:0` and reads the URL
/// of each specialist from its stdout.
async fn serve_http(names: &[&str]) -> (tokio::process::Child, Vec<(String, String)>) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["agent", "serve"])
        .args(names)
        .args(["--http", "127.0.0.1:0"])
        .env_remove("TRIAGE_AGENTS")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    while urls.len() < names.len() {
        let line = lines.next_line().await.unwrap().expect("a URL per specialist");
        let (name, url) = line.split_once(' ').unwrap();
        urls.push((name.to_string(), url.to_string()));
    }
    (child, urls)
}

#[tokio::test]
async fn several_specialists_share_one_process_and_one_model_over_http() {
    let (three, urls) = serve_http(&["legal", "finance", "code"]).await;
    let mut clients = Vec::new();
    for (name, url) in &urls {
        assert!(url.ends_with(&format!("/{name}/mcp")), "{url}");
        let client = ().serve(StreamableHttpClientTransport::from_uri(url.as_str())).await.unwrap();
        assert_eq!(
            client.peer_info().unwrap().server_info.as_ref().unwrap().name,
            format!("triage-{name}")
        );
        let r = call(
            &client,
            "ask",
            json!({ "question": "One word: yes or no?", "max_tokens": 4 }),
        )
        .await;
        assert_eq!(structured(&r)["agent"], name.as_str());
        clients.push(client);
    }
    let r = call(
        &clients[1],
        "sentiment",
        json!({ "text": "Net sales rose 20 % to EUR 50 mn." }),
    )
    .await;
    assert_eq!(structured(&r)["label"], "positive");
    let r = call(
        &clients[0],
        "classify_clauses",
        json!({ "text": "This Agreement is governed by the laws of Finland.", "split": false }),
    )
    .await;
    assert_eq!(structured(&r)["clauses"][0]["label"], "Governing Law");
    let card = model_card(&clients[2], "code").await;
    assert_eq!(card["agent"], "code");

    // Three specialists cost one model, not three.
    let (one, one_urls) = serve_http(&["finance"]).await;
    let client = ().serve(StreamableHttpClientTransport::from_uri(one_urls[0].1.as_str())).await.unwrap();
    call(
        &client,
        "ask",
        json!({ "question": "One word: yes or no?", "max_tokens": 4 }),
    )
    .await;
    call(&client, "sentiment", json!({ "text": "Net sales rose." })).await;
    let (rss3, rss1) = (rss_mib(three.id().unwrap()), rss_mib(one.id().unwrap()));
    eprintln!("resident memory: legal+finance+code {rss3:.0} MiB, finance alone {rss1:.0} MiB");
    assert!(
        rss3 < rss1 * 1.3,
        "three specialists ({rss3:.0} MiB) should share the model of one ({rss1:.0} MiB)"
    );
    for c in clients {
        c.cancel().await.unwrap();
    }
    client.cancel().await.unwrap();
}

#[test]
fn http_serving_refuses_a_public_address_and_stdio_refuses_several() {
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_triage"))
            .args(["agent", "serve"])
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&["legal", "--http", "0.0.0.0:7301"]);
    assert!(
        err.contains("loopback only") && err.contains("127.0.0.1"),
        "{err}"
    );
    let err = run(&["legal", "finance"]);
    assert!(
        err.contains("one process serves one specialist") && err.contains("--http"),
        "{err}"
    );
}
