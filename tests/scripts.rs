//! The project's scripts refuse bad options with a message that says what was
//! wrong, before they build or fetch anything. Real bash, the real scripts.

use std::path::PathBuf;
use std::process::{Command, Output};

fn script(name: &str, args: &[&str]) -> Output {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name);
    Command::new("bash")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running bash {}: {e}", path.display()))
}

/// Runs the script and checks its exit status and that stderr holds `message`.
fn refuses(name: &str, args: &[&str], code: i32, message: &str) {
    let out = script(name, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{name} {args:?}: stderr {stderr}");
    assert!(
        stderr.contains(message),
        "{name} {args:?}: stderr lacks {message:?}: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{name} {args:?} printed to stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bench_vs_llamacpp_refuses_bad_options() {
    let bench = "bench-vs-llamacpp.sh";
    refuses(bench, &["--frobnicate"], 2, "unknown option '--frobnicate'");
    // A usage error also prints the usage, so the fix is in sight.
    refuses(bench, &["--frobnicate"], 2, "--avx2-only");
    refuses(
        bench,
        &["--threads", "0"],
        2,
        "--threads must be a positive integer, not '0'",
    );
    refuses(
        bench,
        &["--rounds=two"],
        2,
        "--rounds must be a positive integer, not 'two'",
    );
    refuses(bench, &["--rounds"], 2, "--rounds needs a value");
    refuses(bench, &["--threads", "100000"], 2, "oversubscribed threads");
    refuses(
        bench,
        &["--prompt-tokens", "1"],
        2,
        "--prompt-tokens must be at least 2",
    );
    refuses(
        bench,
        &["--model", "/no/such/model.gguf"],
        1,
        "no such model file: /no/such/model.gguf",
    );
}

#[test]
fn bench_vs_llamacpp_help_names_every_option() {
    let out = script("bench-vs-llamacpp.sh", &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--model",
        "--threads",
        "--rounds",
        "--prompt-tokens",
        "--gen-tokens",
        "--avx2-only",
        "--json",
    ] {
        assert!(help.contains(option), "--help lacks {option}: {help}");
    }
}

#[test]
fn kernels_in_bochs_refuses_bad_options() {
    let bochs = "test-kernels-in-bochs.sh";
    refuses(bochs, &["--frobnicate"], 2, "unknown option '--frobnicate'");
    refuses(bochs, &["--timeout"], 2, "--timeout needs a value");
    refuses(
        bochs,
        &["--timeout", "soon"],
        2,
        "--timeout must be a positive number of seconds, not 'soon'",
    );
}
