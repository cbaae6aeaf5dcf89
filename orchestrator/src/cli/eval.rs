//! `triage eval agents`: each classification tool measured on a labelled
//! file: accuracy, macro-F1, the most frequent confusions, latency per item,
//! and accuracy per confidence bucket (does low confidence go with errors?).
//! `triage eval router` (in `eval/router.rs`): the router on labelled tasks.

mod escalation;
mod router;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::json;
use triage_agents::{LabelClassifier, LabelSet};
use triage_tools::code::{DetectLanguageParams, detect_language};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Measure the specialists' classification tools on labelled data.
    Agents(AgentsArgs),
    /// Measure the router on labelled tasks (DIR/route-dev.jsonl): accuracy,
    /// confusion matrix, calibration error and latency; --fit refits its
    /// calibration.
    Router(router::Args),
    /// Measure the cascade on questions with known answers
    /// (DIR/escalation-dev.jsonl): accuracy, AUROC of the confidence, and
    /// what each stage would keep or escalate.
    Escalation(escalation::Args),
}

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    /// Folder holding the labelled files (fields `text` and `label`).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Measure only these tasks (e.g. `finance.sentiment`); all by default.
    #[arg(long = "task", value_name = "TASK")]
    tasks: Vec<String>,
    /// Also write every item's prediction, confidence and per-label
    /// evidence to this JSON Lines file, for error analysis.
    #[arg(long, value_name = "FILE")]
    details: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// How a task labels a text.
#[derive(Clone, Copy)]
enum Method {
    /// A deterministic tool.
    Tool(fn(&str) -> (String, f64, serde_json::Value)),
    /// A label classifier over a label set in `specs/labels/`.
    Labels(&'static str),
}

/// A [`Method`] made ready: the label classifier built.
enum Classify {
    Tool(fn(&str) -> (String, f64, serde_json::Value)),
    Labels(LabelClassifier),
}

/// One classification task: a labelled file and the tool that labels it.
struct Task {
    name: &'static str,
    file: &'static str,
    method: Method,
}

const TASKS: &[Task] = &[
    Task {
        name: "code.detect_language",
        file: "code-language-dev.jsonl",
        method: Method::Tool(|text| {
            let d = detect_language(&DetectLanguageParams {
                code: text.to_string(),
            });
            let evidence = json!({ "candidates": d.candidates, "evidence": d.evidence });
            (d.language, d.confidence, evidence)
        }),
    },
    Task {
        name: "finance.sentiment",
        file: "finance-sentiment-dev.jsonl",
        method: Method::Labels("sentiment"),
    },
    Task {
        name: "legal.classify_clauses",
        file: "legal-clauses-dev.jsonl",
        method: Method::Labels("clause-types"),
    },
];

/// Confidence buckets: [0, 0.5), [0.5, 0.8), [0.8, 0.95), [0.95, 1].
const BUCKETS: [f64; 4] = [0.0, 0.5, 0.8, 0.95];

pub async fn run(ctx: &triage::Context, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Agents(args) => agents(ctx, args).await,
        Command::Router(args) => router::run(ctx, args).await,
        Command::Escalation(args) => escalation::run(ctx, args).await,
    }
}

async fn agents(ctx: &triage::Context, args: AgentsArgs) -> anyhow::Result<ExitCode> {
    if let Some(unknown) = args.tasks.iter().find(|t| !TASKS.iter().any(|k| k.name == *t)) {
        let known: Vec<&str> = TASKS.iter().map(|t| t.name).collect();
        bail!("unknown task `{unknown}`; the tasks are: {}", known.join(", "));
    }
    let tasks: Vec<&Task> = TASKS
        .iter()
        .filter(|t| args.tasks.is_empty() || args.tasks.iter().any(|n| n == t.name))
        .collect();
    // Read every file first, so a missing one fails before any model loads.
    let mut inputs = Vec::with_capacity(tasks.len());
    for task in &tasks {
        inputs.push(read_pairs(&args.data.join(task.file), "text", "label")?);
    }
    let mut details = match &args.details {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let mut reports = Vec::new();
    for (task, rows) in tasks.iter().zip(inputs) {
        let classify = match task.method {
            Method::Tool(f) => Classify::Tool(f),
            Method::Labels(set) => {
                let set = LabelSet::builtin(set).with_context(|| format!("no label set `{set}`"))?;
                let mut cache = ctx.embedding_cache()?;
                Classify::Labels(LabelClassifier::new(set, ctx.embedder()?, &mut cache).await?)
            }
        };
        let mut results = Vec::with_capacity(rows.len());
        let start = Instant::now();
        for (text, label) in &rows {
            let t = Instant::now();
            let (predicted, confidence, evidence) = match &classify {
                Classify::Tool(f) => f(text),
                Classify::Labels(c) => {
                    let d = c.classify(vec![text.clone()]).await?.remove(0);
                    (d.label, d.confidence, json!(d.scores))
                }
            };
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if let Some(w) = details.as_mut() {
                let row = json!({ "task": task.name, "label": label, "predicted": predicted, "confidence": confidence, "evidence": evidence, "text": text });
                writeln!(w, "{row}")?;
            }
            results.push((label.clone(), predicted, confidence, ms));
        }
        let total_ms = start.elapsed().as_secs_f64() * 1e3;
        reports.push(report(task, &results, total_ms));
    }
    if let Some(mut w) = details {
        w.flush()?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json!({ "data": args.data, "tasks": reports }))?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in &reports {
        writeln!(
            out,
            "{}  ({} items from {})",
            r["task"].as_str().unwrap_or_default(),
            r["items"],
            r["file"].as_str().unwrap_or_default()
        )?;
        let rows = vec![
            vec![
                "accuracy".into(),
                format!("{:.3}", r["accuracy"].as_f64().unwrap_or(0.0)),
            ],
            vec![
                "macro-F1".into(),
                format!("{:.3}", r["macro_f1"].as_f64().unwrap_or(0.0)),
            ],
            vec![
                "latency per item".into(),
                format!("{:.2} ms (p50)", r["latency_ms_p50"].as_f64().unwrap_or(0.0)),
            ],
        ];
        super::print_table(&mut out, &["measure", "value"], &rows)?;
        let buckets: Vec<Vec<String>> = r["confidence_buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                vec![
                    b["range"].as_str().unwrap_or_default().to_string(),
                    b["items"].to_string(),
                    b["accuracy"].as_f64().map_or("-".into(), |a| format!("{a:.3}")),
                ]
            })
            .collect();
        super::print_table(&mut out, &["confidence", "items", "accuracy"], &buckets)?;
        let confusions: Vec<Vec<String>> = r["top_confusions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                vec![
                    c["label"].as_str().unwrap_or_default().to_string(),
                    c["predicted"].as_str().unwrap_or_default().to_string(),
                    c["count"].to_string(),
                ]
            })
            .collect();
        if !confusions.is_empty() {
            super::print_table(&mut out, &["label", "predicted as", "count"], &confusions)?;
        }
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `input` and `label` fields of each line of a JSON Lines file (a
/// numeric label is read as its decimal text).
fn read_pairs(path: &Path, input: &str, label: &str) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {} (pass the folder holding it with --data DIR)",
            path.display()
        )
    })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        let l = match &v[label] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        match (v[input].as_str(), l) {
            (Some(t), Some(l)) => rows.push((t.to_string(), l)),
            _ => bail!(
                "{}:{}: each line needs a string field `{input}` and a field `{label}`",
                path.display(),
                i + 1
            ),
        }
    }
    if rows.is_empty() {
        bail!("{} holds no rows", path.display());
    }
    Ok(rows)
}

fn report(task: &Task, results: &[(String, String, f64, f64)], total_ms: f64) -> serde_json::Value {
    let n = results.len();
    let correct = results.iter().filter(|r| r.0 == r.1).count();
    let labels: std::collections::BTreeSet<&str> = results.iter().map(|r| r.0.as_str()).collect();
    let f1s: Vec<f64> = labels
        .iter()
        .map(|&l| {
            let tp = results.iter().filter(|r| r.0 == l && r.1 == l).count() as f64;
            let fp = results.iter().filter(|r| r.0 != l && r.1 == l).count() as f64;
            let fn_ = results.iter().filter(|r| r.0 == l && r.1 != l).count() as f64;
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (2.0 * tp + fp + fn_)
            }
        })
        .collect();
    let mut confusions: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in results.iter().filter(|r| r.0 != r.1) {
        *confusions.entry((r.0.as_str(), r.1.as_str())).or_default() += 1;
    }
    let mut confusions: Vec<_> = confusions.into_iter().collect();
    confusions.sort_by_key(|c| std::cmp::Reverse(c.1));
    let buckets: Vec<serde_json::Value> = BUCKETS
        .iter()
        .enumerate()
        .map(|(i, &lo)| {
            let hi = BUCKETS.get(i + 1).copied().unwrap_or(1.0 + 1e-9);
            let inside: Vec<_> = results.iter().filter(|r| r.2 >= lo && r.2 < hi).collect();
            let acc = (!inside.is_empty())
                .then(|| inside.iter().filter(|r| r.0 == r.1).count() as f64 / inside.len() as f64);
            json!({ "range": format!("[{lo:.2}, {:.2}{}", hi.min(1.0), if i + 1 == BUCKETS.len() { "]" } else { ")" }), "items": inside.len(), "accuracy": acc })
        })
        .collect();
    let mut latencies: Vec<f64> = results.iter().map(|r| r.3).collect();
    latencies.sort_by(f64::total_cmp);
    json!({
        "task": task.name,
        "file": task.file,
        "items": n,
        "accuracy": correct as f64 / n as f64,
        "macro_f1": f1s.iter().sum::<f64>() / f1s.len().max(1) as f64,
        "latency_ms_p50": triage::percentile(&latencies, 0.5),
        "latency_ms_p95": triage::percentile(&latencies, 0.95),
        "total_ms": total_ms,
        "confidence_buckets": buckets,
        "top_confusions": confusions.iter().take(8).map(|((l, p), c)| json!({ "label": l, "predicted": p, "count": c })).collect::<Vec<_>>(),
    })
}
