//! Workflows end to end: the example specs run with real agent processes,
//! runs killed with SIGKILL at several points and resumed, cancellation,
//! and the errors a user can reach from the CLI.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{failed_with, ok_json};

const TRIAGE: &str = env!("CARGO_BIN_EXE_triage");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `triage ARGS` with its own runs folder and store.
fn command(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(TRIAGE);
    cmd.args(args)
        .current_dir(root())
        .env("TRIAGE_RUNS", home.join("runs"))
        .env("TRIAGE_STORE", home.join("store"))
        .env_remove("TRIAGE_AGENTS")
        .env_remove("TRIAGE_REGISTRY")
        .stdin(Stdio::null());
    cmd
}

fn triage(home: &Path, args: &[&str]) -> Output {
    command(home, args).output().expect("run triage")
}

#[test]
fn the_example_workflows_run_end_to_end() {
    let home = tempfile::tempdir().unwrap();
    let run = |spec: &str, input: &str| {
        let o = triage(home.path(), &["run", spec, "--input", input, "--json"]);
        let v = ok_json(&o);
        assert_eq!(v["status"], "completed", "{v}");
        v["outputs"].clone()
    };

    let contract = run(
        "specs/workflows/contract-review.yaml",
        "contract=@examples/contracts/services-agreement.txt",
    );
    let clauses = contract["clauses"].as_str().unwrap();
    for label in [
        "Indemnification",
        "Cap on Liability",
        "Governing Law",
        "Termination for Convenience",
    ] {
        assert!(clauses.contains(label), "{clauses}");
    }
    let parties = contract["parties"].as_array().unwrap();
    assert!(
        parties.iter().any(|p| p.as_str().unwrap().contains("Northwind")),
        "{contract}"
    );
    assert!(contract["amounts"].to_string().contains("18,500"), "{contract}");
    // One explanation per risky clause, and a summary.
    assert!(
        contract["risks"].as_str().unwrap().lines().count() >= 3,
        "{contract}"
    );
    assert!(!contract["summary"].as_str().unwrap().trim().is_empty());

    let call = run(
        "specs/workflows/earnings-call.yaml",
        "transcript=@examples/earnings/q3-call.txt",
    );
    // Seven paragraphs, each with a sentiment, in order.
    let sentiment = call["sentiment"].as_str().unwrap();
    assert_eq!(sentiment.lines().count(), 7, "{sentiment}");
    assert!(
        sentiment.lines().next().unwrap().starts_with("1. "),
        "{sentiment}"
    );
    assert!(
        sentiment.contains("positive") && sentiment.contains("negative"),
        "{sentiment}"
    );
    assert!(call["amounts"].to_string().contains("EUR 412 million"), "{call}");
    assert!(!call["summary"].as_str().unwrap().trim().is_empty());

    let code = run(
        "specs/workflows/code-review.yaml",
        "code=@examples/code/fetch_users.py",
    );
    assert!(code["language"].as_str().unwrap().starts_with("python"), "{code}");
    let findings = code["findings"].as_str().unwrap();
    assert!(
        findings.contains("bare-except") || findings.contains("except"),
        "{findings}"
    );
    assert!(findings.lines().count() >= 3, "{findings}");
    assert!(!code["overview"].as_str().unwrap().trim().is_empty());

    // Every run is listed as completed, and shows its steps.
    let list = ok_json(&triage(home.path(), &["runs", "list", "--json"]));
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r["status"] == "completed"), "{list}");
    let id = runs[0]["id"].as_str().unwrap();
    let shown = ok_json(&triage(home.path(), &["runs", "show", id, "--json"]));
    let steps = shown["steps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["agent"] == "code" && s["status"] == "completed"),
        "{shown}"
    );
    let table = triage(home.path(), &["runs", "show", id]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("timeline:"));
}

/// A workflow for the crash tests: a fast tool step, a fan-out of short
/// greedy answers, a slower answer, and a last tool step. Deterministic, so
/// an interrupted-and-resumed run must give an uninterrupted run's outputs.
const CRASH_SPEC: &str = r#"
name: crash-test
version: "1"
concurrency: 1
inputs:
  contract: { type: string }
steps:
  - id: split
    agent: legal
    tool: split_clauses
    with: { text: "{{ inputs.contract }}" }
  - id: gist
    for_each: "{{ steps.split.output.clauses[:4] }}"
    agent: general
    prompt: "Name the topic of this clause in three words: {{ item.text }}"
    max_tokens: 12
    min_confidence: 0
  - id: slow
    agent: general
    prompt: "Write two sentences about contracts that mention {% for g in steps.gist.output %}{{ g.answer }}, {% endfor %}"
    max_tokens: 48
    min_confidence: 0
  - id: amounts
    agent: finance
    tool: extract_amounts
    with: { text: "{{ inputs.contract }} {{ steps.slow.output.answer }}" }
outputs:
  gist: "{{ steps.gist.output | map(attribute='answer') | list }}"
  slow: "{{ steps.slow.output.answer }}"
  amounts: "{{ steps.amounts.output.amounts | map(attribute='text') | list }}"
"#;

/// Where to kill a run: after the stderr line containing this text, and
/// how long after it.
struct KillPoint {
    name: &'static str,
    after_line: &'static str,
    delay: Duration,
}

#[test]
fn runs_killed_at_any_point_resume_without_repeating_completed_steps() {
    let home = tempfile::tempdir().unwrap();
    let spec = home.path().join("crash.yaml");
    std::fs::write(&spec, CRASH_SPEC).unwrap();
    let spec = spec.to_str().unwrap();
    let input = "contract=@examples/contracts/services-agreement.txt";

    let clean = ok_json(&triage(home.path(), &["run", spec, "--input", input, "--json"]));
    assert_eq!(clean["status"], "completed", "{clean}");

    let points = [
        KillPoint {
            name: "during fan-out",
            after_line: "gist[1] completed",
            delay: Duration::ZERO,
        },
        KillPoint {
            name: "during a step",
            after_line: "▶ slow",
            delay: Duration::from_millis(400),
        },
        KillPoint {
            name: "between steps",
            after_line: "✓ slow",
            delay: Duration::ZERO,
        },
    ];
    for point in points {
        let mut child = command(home.path(), &["run", spec, "--input", input])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let hit = line.contains(point.after_line);
            seen.push(line);
            if hit {
                break;
            }
        }
        assert!(
            seen.last().is_some_and(|l| l.contains(point.after_line)),
            "{}: never saw {:?} in {seen:?}",
            point.name,
            point.after_line
        );
        std::thread::sleep(point.delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let list = ok_json(&triage(home.path(), &["runs", "list", "--json"]));
        let run = list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "interrupted")
            .unwrap_or_else(|| panic!("{}: no interrupted run in {list}", point.name))
            .clone();
        let id = run["id"].as_str().unwrap();

        let resumed = ok_json(&triage(home.path(), &["runs", "resume", id, "--json"]));
        assert_eq!(resumed["status"], "completed", "{}: {resumed}", point.name);
        assert_eq!(
            resumed["outputs"], clean["outputs"],
            "{}: outputs differ from an uninterrupted run",
            point.name
        );

        // Nothing that had completed before the kill ran again; what was
        // running then ran again from its start.
        let shown = ok_json(&triage(home.path(), &["runs", "show", id, "--json"]));
        let events = shown["events"].as_array().unwrap();
        let resume_at = events
            .iter()
            .position(|e| e["kind"] == "run_resumed")
            .expect("a resume event");
        let (before, after) = events.split_at(resume_at);
        let key = |e: &Value| (e["step"].as_str().unwrap_or("").to_string(), e["item"].as_u64());
        let kinds = |evs: &[Value], kind: &str| -> Vec<(String, Option<u64>)> {
            evs.iter().filter(|e| e["kind"] == kind).map(key).collect()
        };
        let completed_before: Vec<_> = kinds(before, "step_completed")
            .into_iter()
            .chain(kinds(before, "item_completed"))
            .collect();
        let started_after: Vec<_> = kinds(after, "step_started")
            .into_iter()
            .chain(kinds(after, "item_started"))
            .collect();
        for done in &completed_before {
            assert!(
                !started_after.contains(done),
                "{}: {done:?} completed before the kill but ran again",
                point.name
            );
        }
        // Everything that had not completed (the step or item running at
        // the kill among them) ran after the resume.
        let all_steps = ["split", "gist", "slow", "amounts"].map(|s| (s.to_string(), None));
        let all_items = (0..4).map(|i| ("gist".to_string(), Some(i)));
        for s in all_steps.into_iter().chain(all_items) {
            if !completed_before.contains(&s) {
                assert!(
                    started_after.contains(&s),
                    "{}: {s:?} had not completed but did not run after the resume",
                    point.name
                );
            }
        }
        assert!(
            !started_after.is_empty(),
            "{}: nothing was left to run: {events:?}",
            point.name
        );
        assert!(
            !completed_before.is_empty(),
            "{}: nothing had completed: {events:?}",
            point.name
        );
    }
}

#[test]
fn a_running_run_is_cancelled_from_another_process_and_resumed() {
    let home = tempfile::tempdir().unwrap();
    let spec = home.path().join("crash.yaml");
    std::fs::write(&spec, CRASH_SPEC).unwrap();
    let spec = spec.to_str().unwrap();
    let mut child = command(
        home.path(),
        &[
            "run",
            spec,
            "--input",
            "contract=@examples/contracts/services-agreement.txt",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in stderr.by_ref() {
        if line.unwrap().contains("gist[0] completed") {
            break;
        }
    }
    // Keep reading, so the run can still write its last lines.
    let rest = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<String>>());
    // It is running: shown as such, and its store is not opened under it.
    let list = ok_json(&triage(home.path(), &["runs", "list", "--json"]));
    let id = list["runs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["runs"][0]["status"], "running", "{list}");
    failed_with(
        &triage(home.path(), &["runs", "show", &id]),
        "is running in process",
    );
    failed_with(
        &triage(home.path(), &["runs", "resume", &id]),
        "in use by process",
    );

    let start = Instant::now();
    let cancel = triage(home.path(), &["runs", "cancel", &id]);
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    assert!(String::from_utf8_lossy(&cancel.stdout).contains("cancelled"));
    assert!(start.elapsed() < Duration::from_secs(30));
    let status = child.wait().unwrap();
    let rest = rest.join().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("cancelled; resume it with")),
        "{rest:?}"
    );
    let shown = ok_json(&triage(home.path(), &["runs", "show", &id, "--json"]));
    assert_eq!(shown["run"]["status"], "cancelled");
    assert!(
        shown["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "run_cancelled")
    );

    // A cancelled run can be finished later.
    let resumed = ok_json(&triage(home.path(), &["runs", "resume", &id, "--json"]));
    assert_eq!(resumed["status"], "completed", "{resumed}");
    let again = triage(home.path(), &["runs", "cancel", &id]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already completed"));
}

#[test]
fn user_errors_are_clear() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let spec = "specs/workflows/contract-review.yaml";
    failed_with(&triage(h, &["run", spec]), "needs the input `contract`");
    failed_with(
        &triage(h, &["run", spec, "--input", "contract"]),
        "write NAME=VALUE or NAME=@FILE",
    );
    failed_with(
        &triage(h, &["run", spec, "--input", "contrat=x"]),
        "has no input `contrat`; its inputs are: contract, risky",
    );
    failed_with(
        &triage(
            h,
            &["run", spec, "--input", "contract=x", "--input", "risky=[oops"],
        ),
        "input `risky` must be JSON",
    );
    failed_with(
        &triage(h, &["run", spec, "--input", "contract=@/no/such/file"]),
        "cannot read input `contract`",
    );
    failed_with(
        &triage(h, &["runs", "resume", "20990101-000000-abcdef"]),
        "no run 20990101-000000-abcdef",
    );
    failed_with(&triage(h, &["runs", "show", "nope"]), "no run nope");
    let empty = triage(h, &["runs", "list"]);
    assert!(String::from_utf8_lossy(&empty.stdout).contains("no runs yet"));

    // Validation errors name the file, line and column; nothing runs.
    let bad = h.join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\nversion: '1'\nsteps:\n  - id: a\n    agent: legal\n    tool: split_clauses\n    with: { text: '{{ steps.b.output }}' }\n",
    )
    .unwrap();
    let o = triage(h, &["validate", bad.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert!(
        out.contains("bad.yaml:7:19: unknown step `b`; the steps are: a"),
        "{out}"
    );
    failed_with(
        &triage(h, &["run", bad.to_str().unwrap()]),
        "bad.yaml:7:19: unknown step `b`",
    );
    assert!(!h.join("runs").exists() || std::fs::read_dir(h.join("runs")).unwrap().next().is_none());
    let ok = ok_json(&triage(
        h,
        &[
            "validate",
            "--json",
            "specs/workflows/contract-review.yaml",
            "specs/workflows/earnings-call.yaml",
            "specs/workflows/code-review.yaml",
        ],
    ));
    assert_eq!(ok["ok"], true, "{ok}");
    let schema = triage(h, &["validate", "--schema"]);
    let schema: Value = serde_json::from_slice(&schema.stdout).unwrap();
    assert_eq!(schema["title"], "triage workflow");
}

const KNOBS_SPEC: &str = r#"
name: knobs
version: "1"
inputs:
  go: { type: boolean, default: false }
  contract: { type: string }
steps:
  - id: split
    agent: legal
    tool: split_clauses
    with: { text: "{{ inputs.contract }}" }
  - id: maybe
    when: inputs.go
    agent: legal
    tool: extract_terms
    with: { text: "{{ inputs.contract }}" }
  - id: after_maybe
    agent: finance
    tool: extract_amounts
    with: { text: "{{ steps.maybe.output.parties | length }} parties" }
  - id: slow
    agent: general
    prompt: "Write a long story about {{ steps.split.output.clauses | length }} dragons."
    max_tokens: 400
    min_confidence: 0
    timeout: 300ms
    retry: { attempts: 2, backoff: 100ms }
"#;

#[test]
fn conditions_skip_and_timeouts_retry_then_fail_the_run() {
    let home = tempfile::tempdir().unwrap();
    let spec = home.path().join("knobs.yaml");
    std::fs::write(&spec, KNOBS_SPEC).unwrap();
    let spec = spec.to_str().unwrap();
    let contract = "contract=@examples/contracts/services-agreement.txt";

    let o = triage(home.path(), &["run", spec, "--input", contract]);
    failed_with(&o, "step `slow` failed");
    failed_with(&o, "after 2 attempts");
    let list = ok_json(&triage(home.path(), &["runs", "list", "--json"]));
    assert_eq!(list["runs"][0]["status"], "failed", "{list}");
    let id = list["runs"][0]["id"].as_str().unwrap();
    let shown = ok_json(&triage(home.path(), &["runs", "show", id, "--json"]));
    let step = |name: &str| {
        shown["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == name && s["item"].is_null())
            .unwrap_or_else(|| panic!("no step {name} in {shown}"))
            .clone()
    };
    assert_eq!(step("split")["status"], "completed");
    assert_eq!(step("maybe")["status"], "skipped");
    assert!(
        step("maybe")["error"]
            .as_str()
            .unwrap()
            .contains("`when: inputs.go` is false")
    );
    assert_eq!(step("after_maybe")["status"], "skipped");
    assert!(
        step("after_maybe")["error"]
            .as_str()
            .unwrap()
            .contains("needs `maybe`, which was skipped")
    );
    assert_eq!(step("slow")["status"], "failed");

    // With the condition true, the skipped steps run.
    let o = triage(
        home.path(),
        &["run", spec, "--input", contract, "--input", "go=true", "--json"],
    );
    assert!(!o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = v["id"].as_str().unwrap();
    let shown = ok_json(&triage(home.path(), &["runs", "show", id, "--json"]));
    let statuses: Vec<(String, String)> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("maybe".into(), "completed".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("after_maybe".into(), "completed".into())),
        "{statuses:?}"
    );
}

#[test]
fn a_damaged_run_store_is_refused_and_left_as_it_was() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("runs").join("20260101-000000-000000");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("db"), b"this is not a sled database").unwrap();
    std::fs::write(dir.join("conf"), b"garbage").unwrap();
    let before: Vec<(String, Vec<u8>)> = ["db", "conf"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect();
    let o = triage(home.path(), &["runs", "show", "20260101-000000-000000"]);
    failed_with(&o, "cannot be opened");
    failed_with(&o, "left unchanged");
    for (f, bytes) in before {
        assert_eq!(std::fs::read(dir.join(&f)).unwrap(), bytes, "{f} was changed");
    }
    // The controller's store is guarded the same way.
    let store = home.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("db"), b"not sled either").unwrap();
    let o = triage(home.path(), &["history"]);
    failed_with(&o, "cannot be opened");
    assert_eq!(std::fs::read(store.join("db")).unwrap(), b"not sled either");
}
