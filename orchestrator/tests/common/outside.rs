//! The outside programs the tests drive (Node 22, the MCP Inspector,
//! server-everything, the conformance suite, the Python `mcp` SDK), from
//! `scripts/install-test-tools.sh`, and a gateway to point them at.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where `scripts/install-test-tools.sh` puts everything.
pub fn test_tools() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools")
}

/// Runs the install script once per test binary (it does nothing when
/// everything is there).
pub fn ensure_test_tools() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-test-tools.sh");
        assert!(
            Command::new(&script).status().unwrap().success(),
            "{} failed: it installs Node 22 and the MCP tools with npm, and the Python SDK with pip",
            script.display()
        );
    });
}

/// `triage serve --http 127.0.0.1:0 ARGS` with its runs and store in
/// `home`, stopped when dropped.
pub struct Served {
    pub child: Child,
    pub url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve_gateway(home: &Path, args: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["serve", "--http", "127.0.0.1:0"])
        .args(args)
        .env("TRIAGE_RUNS", home.join("runs"))
        .env("TRIAGE_STORE", home.join("store"))
        .env_remove("TRIAGE_AGENTS")
        .env_remove("TRIAGE_REGISTRY")
        .env_remove("TRIAGE_TOKEN")
        .env_remove("TRIAGE_WORKFLOWS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("triage gateway: ")
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    Served { child, url }
}
