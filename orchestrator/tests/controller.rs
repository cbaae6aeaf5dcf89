//! The controller end to end: `triage ask`, `triage route`, the registry,
//! dispatch and the cascade, with real specialist processes, a real
//! outside MCP server (the reference `server-everything`, run with npx) and
//! a real sled store shared by several processes.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use triage::dispatch::{self, CallOptions};
use triage::registry::Registry;

use common::{failed_with, ok_json};

const TRIAGE: &str = env!("CARGO_BIN_EXE_triage");

/// `triage ARGS` with its own store (`TRIAGE_STORE`) and extra env.
fn triage(store: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(TRIAGE);
    cmd.args(args)
        .env("TRIAGE_STORE", store)
        .env_remove("TRIAGE_CATALOG")
        .env_remove("TRIAGE_AGENTS")
        .env_remove("TRIAGE_REGISTRY")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run triage")
}

#[path = "common/outside.rs"]
mod outside;
use outside::{ensure_test_tools, test_tools};

#[test]
fn each_task_goes_to_its_specialist_and_is_answered() {
    let store = tempfile::tempdir().unwrap();
    let cases = [
        (
            "legal",
            "Can the supplier terminate this services agreement for convenience, and how much notice must it give?",
        ),
        (
            "finance",
            "Quarterly net sales fell 12 % to EUR 48 mn and the board cut the dividend .",
        ),
        (
            "code",
            "def add(a, b):\n    return a + b\n\nWhat does this Python function return?",
        ),
    ];
    for (domain, task) in cases {
        let v = ok_json(&triage(
            store.path(),
            &[],
            &["ask", task, "--no-escalate", "--max-tokens", "12", "--json"],
        ));
        assert_eq!(v["route"]["agent"], domain, "{v}");
        assert_eq!(v["agent"], domain);
        assert_eq!(v["model"], "smollm2-135m-instruct");
        assert_eq!(v["agent_version"], "0.1.0");
        assert!(!v["answer"].as_str().unwrap().trim().is_empty(), "{v}");
        assert_eq!(v["hops"][0]["agent"], domain);
        assert!(v["route"]["probability"].as_f64().unwrap() > 0.5, "{v}");
        let c = v["confidence"].as_f64().unwrap();
        assert!(c > 0.0 && c <= 1.0);
        assert!(v["latency_ms"].as_f64().unwrap() > 0.0);
    }
    // Everything was recorded, and the stats add up.
    let stats = ok_json(&triage(store.path(), &[], &["agents", "stats", "--json"]));
    for domain in ["legal", "finance", "code"] {
        assert_eq!(stats["agents"][domain]["calls"], 1, "{stats}");
        assert!(stats["agents"][domain]["tokens"].as_u64().unwrap() > 0, "{stats}");
    }
    let history = ok_json(&triage(store.path(), &[], &["history", "--json"]));
    assert_eq!(history["asks"].as_array().unwrap().len(), 3);
    let routes = ok_json(&triage(store.path(), &[], &["history", "--routes", "--json"]));
    assert_eq!(routes["routes"].as_array().unwrap().len(), 3);
    // The human form names the specialist, the model and the route.
    let o = triage(
        store.path(),
        &[],
        &[
            "ask",
            "def f(x):\n    return x * 2\n",
            "--no-escalate",
            "--max-tokens",
            "8",
            "--explain",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "answered by  code 0.1.0, model smollm2-135m-instruct",
        "route        code",
        "candidate",
        "nearest example",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
}

#[test]
fn route_reads_the_task_from_a_file_or_stdin_and_explains_itself() {
    let store = tempfile::tempdir().unwrap();
    let file = store.path().join("task.txt");
    std::fs::write(
        &file,
        "The Licensee shall not assign this Agreement without the prior written consent of the Licensor.",
    )
    .unwrap();
    let v = ok_json(&triage(
        store.path(),
        &[],
        &["route", &format!("@{}", file.display()), "--json"],
    ));
    assert_eq!(v["agent"], "legal");
    assert_eq!(v["stage"], "similarity");
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 4);
    let total: f64 = candidates
        .iter()
        .map(|c| c["probability"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 0.01, "probabilities sum to one: {total}");
    assert_eq!(candidates[0]["nearest"].as_array().unwrap().len(), 2);

    let mut child = Command::new(TRIAGE)
        .args(["route", "-", "--json"])
        .env("TRIAGE_STORE", store.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"fn main() {\n    let v: Vec<i32> = (1..10).collect();\n    println!(\"{:?}\", v);\n}\n")
        .unwrap();
    let v = ok_json(&child.wait_with_output().unwrap());
    assert_eq!(v["agent"], "code");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    failed_with(&triage(s, &[], &["ask", "   "]), "the task is empty");
    failed_with(
        &triage(s, &[], &["ask", "@/nonexistent/task.txt"]),
        "cannot read the task from /nonexistent/task.txt",
    );
    failed_with(
        &triage(s, &[], &["ask", "hello", "--min-confidence", "2"]),
        "--min-confidence must be between 0 and 1",
    );
    failed_with(
        &triage(s, &[], &["ask", "hello", "--domain", "astrology"]),
        "there is no specialist `astrology`; choose one of: ",
    );
    // Registry files are checked before anything runs.
    let registry = s.join("registry.toml");
    let cases = [
        (
            "[[agent]]\nname = \"x\"\ncommand = [\"a\"]\nurl = [\"http://127.0.0.1:1/mcp\"]\n",
            "agent `x` has both `command` and `url`",
        ),
        ("[[agent]]\nname = \"x\"\n", "agent `x` needs either `command`"),
        (
            "[[agent]]\nname = \"x\"\ncomand = [\"a\"]\n",
            "registry.toml:3:1: unknown field `comand`",
        ),
        (
            "[[agent]]\nname = \"x\"\nurl = [\"ftp://host\"]\n",
            "`ftp://host` is not an http:// or https:// URL",
        ),
        (
            "[[agent]]\nname = \"x\"\nspec = \"astrology\"\ncommand = [\"a\"]\n",
            "names the spec `astrology`, which does not exist",
        ),
        (
            "[cascade]\nfallback = { agent = \"nobody\" }\n",
            "the cascade's fallback `nobody` is not a registered agent",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&registry, text).unwrap();
        failed_with(
            &triage(
                s,
                &[],
                &["agents", "list", "--registry", registry.to_str().unwrap()],
            ),
            needle,
        );
    }
    // An agent that cannot start is reported, not hung on.
    std::fs::write(
        &registry,
        "[[agent]]\nname = \"ghost\"\ncommand = [\"/nonexistent/server\"]\nattempts = 1\n",
    )
    .unwrap();
    let o = triage(
        s,
        &[],
        &[
            "agents",
            "health",
            "ghost",
            "--registry",
            registry.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(!o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["agents"][0]["ok"], false);
    assert!(
        v["agents"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot start agent `ghost`"),
        "{v}"
    );
}

/// A registry with the MCP reference server (run by npx from the folder
/// the test tools are installed in) as the cascade's fallback.
fn everything_registry(dir: &Path) -> PathBuf {
    ensure_test_tools();
    let path = dir.join("registry.toml");
    let text = format!(
        r#"[[agent]]
name = "everything"
description = "The MCP reference server"
command = ["npx", "--no-install", "@modelcontextprotocol/server-everything"]
cwd = "{}"
timeout_ms = 30000

[cascade]
samples = 2
temperature = 0.7
fallback = {{ agent = "everything", tool = "echo", argument = "message" }}
"#,
        test_tools().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_low_confidence_answer_climbs_the_cascade_to_any_mcp_server() {
    let store = tempfile::tempdir().unwrap();
    let registry = everything_registry(store.path());
    let env = [("TRIAGE_REGISTRY", registry.to_str().unwrap())];
    let list = ok_json(&triage(store.path(), &env, &["agents", "list", "--json"]));
    let names: Vec<&str> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["legal", "finance", "code", "general", "everything"]);
    let health = ok_json(&triage(
        store.path(),
        &env,
        &["agents", "health", "everything", "--json"],
    ));
    assert_eq!(health["agents"][0]["ok"], true, "{health}");
    assert_eq!(health["agents"][0]["server"], "mcp-servers/everything");

    // A confidence no small model reaches: every stage runs.
    let v = ok_json(&triage(
        store.path(),
        &env,
        &[
            "ask",
            "Name a colour.",
            "--domain",
            "general",
            "--min-confidence",
            "0.999",
            "--max-tokens",
            "8",
            "--json",
        ],
    ));
    let hops: Vec<(&str, &str, &str)> = v["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["stage"].as_str().unwrap(),
                h["agent"].as_str().unwrap(),
                h["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        [
            ("specialist", "general", "escalated"),
            ("samples", "general", "escalated"),
            ("fallback", "everything", "kept")
        ],
        "{v}"
    );
    assert_eq!(v["agent"], "everything");
    assert!(
        v["answer"].as_str().unwrap().contains("Name a colour."),
        "the echo tool answered: {v}"
    );
    assert_eq!(v["low_confidence"], false);
    assert_eq!(v["route"]["stage"], "forced");

    // The hops are in the record, and the escalations in the stats.
    let history = ok_json(&triage(store.path(), &env, &["history", "--json"]));
    assert_eq!(history["asks"][0]["hops"].as_array().unwrap().len(), 3);
    let stats = ok_json(&triage(store.path(), &env, &["agents", "stats", "--json"]));
    assert_eq!(
        stats["agents"]["general"]["calls"], 3,
        "one answer and two samples: {stats}"
    );
    assert_eq!(stats["agents"]["general"]["escalations"], 3);
    assert_eq!(stats["agents"]["everything"]["calls"], 1);

    // Without escalation the answer comes back flagged, and nothing else runs.
    let v = ok_json(&triage(
        store.path(),
        &env,
        &[
            "ask",
            "Name a colour.",
            "--domain",
            "general",
            "--min-confidence",
            "0.999",
            "--max-tokens",
            "8",
            "--no-escalate",
            "--json",
        ],
    ));
    assert_eq!(v["hops"].as_array().unwrap().len(), 1);
    assert_eq!(v["hops"][0]["outcome"], "flagged");
    assert_eq!(v["low_confidence"], true);
    assert_eq!(v["agent"], "general");
}

#[test]
fn a_timeout_is_a_clear_error() {
    let store = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let o = triage(
        store.path(),
        &[],
        &[
            "ask",
            "Write a long story about the sea.",
            "--domain",
            "general",
            "--max-tokens",
            "300",
            "--timeout-ms",
            "200",
            "--no-escalate",
        ],
    );
    failed_with(
        &o,
        "agent `general` did not answer `ask` within 200ms (3 attempts)",
    );
    assert!(start.elapsed() < Duration::from_secs(60));
    let stats = ok_json(&triage(store.path(), &[], &["agents", "stats", "--json"]));
    assert_eq!(stats["agents"]["general"]["errors"], 1, "{stats}");
}

/// The controller as a library, its general agent run from the test's
/// triage binary.
fn library_registry(dir: &Path) -> Registry {
    let path = dir.join("registry.toml");
    std::fs::write(
        &path,
        format!("[[agent]]\nname = \"general\"\nspec = \"general\"\ncommand = [\"{TRIAGE}\", \"agent\", \"serve\", \"general\"]\n"),
    )
    .unwrap();
    let ctx = triage::Context::new(None).unwrap();
    let specs = ctx.specs(None).unwrap();
    Registry::load(Some(&path), &specs).unwrap()
}

#[tokio::test]
async fn an_agent_killed_mid_call_is_restarted_and_the_call_retried() {
    let dir = tempfile::tempdir().unwrap();
    let registry = library_registry(dir.path());
    let agent = registry.get("general").unwrap();
    let (tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let options = CallOptions {
        progress: Some(tx),
        ..Default::default()
    };
    let args = json!({ "question": "Write a long story about a lighthouse keeper.", "max_tokens": 120 });
    let call = {
        let agent = agent.clone();
        let args = args.as_object().unwrap().clone();
        tokio::spawn(async move { dispatch::call(&agent, "ask", args, &options).await })
    };
    // Progress means the agent is generating: kill it now.
    let first = tokio::time::timeout(Duration::from_secs(60), progress.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.agent, "general");
    let pid = agent.pid().await.expect("a stdio agent has a pid");
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let outcome = call.await.unwrap().expect("the retried call succeeds");
    assert_eq!(outcome.attempts, 2);
    assert_ne!(outcome.result.is_error, Some(true));
    assert_eq!(agent.starts(), 2, "started again after the kill");
    assert_ne!(agent.pid().await, Some(pid));
    assert!(
        outcome.result.structured_content.unwrap()["tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    // Invalid parameters come back as the tool's error, and are never
    // retried.
    let bad = dispatch::call(
        &agent,
        "ask",
        json!({ "max_tokens": 3 }).as_object().unwrap().clone(),
        &CallOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(bad.result.is_error, Some(true));
    assert!(triage::controller::text_of(&bad.result).contains("missing field `question`"));
    assert_eq!(bad.attempts, 1);
    let unknown = dispatch::call(
        &agent,
        "no_such_tool",
        Default::default(),
        &CallOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("rejected the call to `no_such_tool`"),
        "{unknown}"
    );
    assert_eq!(unknown.attempts(), 1);
    // Shutting the registry down ends the agent process.
    let pid = agent.pid().await.unwrap();
    registry.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        assert!(Instant::now() < deadline, "the agent outlived the shutdown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn ctrl_c_cancels_the_call_on_the_agent() {
    let store = tempfile::tempdir().unwrap();
    let child = Command::new(TRIAGE)
        .args([
            "ask",
            "Write a long essay about the history of printing.",
            "--domain",
            "general",
            "--max-tokens",
            "400",
            "--no-escalate",
        ])
        .env("TRIAGE_STORE", store.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait for the agent process to appear, then give it time to start
    // generating.
    let deadline = Instant::now() + Duration::from_secs(60);
    let agent = loop {
        if let Some(c) = children(pid).into_iter().next() {
            break c;
        }
        assert!(Instant::now() < deadline, "the agent never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{agent}")).exists() && !is_zombie(agent) {
        assert!(Instant::now() < deadline, "the agent outlived the controller");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Child process ids of `pid` (Linux).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

#[test]
fn two_processes_share_the_store_and_a_held_store_is_reported() {
    let store = tempfile::tempdir().unwrap();
    let path = store.path().to_str().unwrap();
    // Two processes at once, each routing four tasks in a row.
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let script = format!(
                "for i in 1 2 3 4; do \"{TRIAGE}\" route \"worker {w} task $i: what is a limitation of liability clause?\" --no-slm > /dev/null || exit 1; done"
            );
            Command::new("bash").args(["-c", &script]).env("TRIAGE_STORE", path).spawn().unwrap()
        })
        .collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    let routes = ok_json(&triage(store.path(), &[], &["history", "--routes", "--json"]));
    let tasks: Vec<&str> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["task"].as_str().unwrap())
        .collect();
    assert_eq!(tasks.len(), 8, "{tasks:?}");
    for w in 0..2 {
        for i in 1..=4 {
            assert!(
                tasks
                    .iter()
                    .any(|t| t.starts_with(&format!("worker {w} task {i}:"))),
                "{tasks:?}"
            );
        }
    }
    // Another process holding the store: a clear error after the wait, no
    // hang, nothing lost.
    let held = sled::open(store.path()).unwrap();
    let start = Instant::now();
    let o = triage(
        store.path(),
        &[("TRIAGE_STORE_WAIT_MS", "300")],
        &["history", "--routes"],
    );
    failed_with(&o, "is in use by another process and stayed locked");
    assert!(start.elapsed() < Duration::from_secs(20));
    drop(held);
    let routes = ok_json(&triage(store.path(), &[], &["history", "--routes", "--json"]));
    assert_eq!(routes["routes"].as_array().unwrap().len(), 8);
}

#[test]
fn eval_router_reports_accuracy_confusion_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        (
            "Is the indemnification obligation in this clause mutual?",
            "legal",
        ),
        (
            "Shares in the retailer fell 8 % after it cut its profit forecast .",
            "finance",
        ),
        ("Write a function that reverses a linked list in Rust.", "code"),
        ("What is a good name for a golden retriever puppy?", "general"),
    ];
    let text: String = rows
        .iter()
        .map(|(t, d)| format!("{}\n", json!({ "text": t, "domain": d })))
        .collect();
    std::fs::write(dir.path().join("route-dev.jsonl"), text).unwrap();
    let d = dir.path().to_str().unwrap();
    let v = ok_json(&triage(
        dir.path(),
        &[],
        &["eval", "router", "--data", d, "--no-slm", "--json"],
    ));
    assert_eq!(v["items"], 4);
    assert_eq!(v["accuracy"], 1.0, "{v}");
    assert!(v["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(v["confusion"].as_array().unwrap().len(), 4);
    let o = triage(dir.path(), &[], &["eval", "router", "--data", d, "--no-slm"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("calibration error (ECE)"));
    let fit = triage(dir.path(), &[], &["eval", "router", "--data", d, "--fit"]);
    assert!(
        String::from_utf8_lossy(&fit.stdout).contains("similarity_weight = "),
        "{}",
        String::from_utf8_lossy(&fit.stderr)
    );

    std::fs::write(
        dir.path().join("route-dev.jsonl"),
        "{\"text\": \"x\", \"domain\": \"astrology\"}\n",
    )
    .unwrap();
    failed_with(
        &triage(dir.path(), &[], &["eval", "router", "--data", d]),
        "row 1 has domain `astrology`, which no specialist serves",
    );
    failed_with(
        &triage(dir.path(), &[], &["eval", "escalation", "--data", "/nonexistent"]),
        "cannot read /nonexistent/escalation-dev.jsonl",
    );
}
