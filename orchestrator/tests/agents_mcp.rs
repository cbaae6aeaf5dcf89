//! Specialists as real child processes (`triage agent serve NAME`), called
//! through an rmcp client over stdio.

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

async fn spawn(name: &str) -> RunningService<RoleClient, ()> {
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_triage")).configure(|c| {
        c.args(["agent", "serve", name]).env_remove("TRIAGE_AGENTS");
    });
    ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap()
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> CallToolResult {
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
    assert_eq!(names, ["ask", "code_metrics", "detect_language"]);
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
    client.cancel().await.unwrap();
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
