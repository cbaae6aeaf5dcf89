//! `triage eval router`: the router on labelled tasks (`route-dev.jsonl`,
//! fields `text` and `domain`): accuracy, a confusion matrix, calibration
//! error, how often each stage decided, and routing latency. `--fit`
//! refits the calibration in `specs/router.toml` on the same file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::json;
use triage::router::fit::expected_calibration_error;
use triage::router::{RouteStage, RouterConfig, fit_calibration};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder holding route-dev.jsonl (fields `text` and `domain`).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// The labelled file inside --data.
    #[arg(long, default_value = "route-dev.jsonl")]
    file: String,
    /// Router configuration instead of the built-in specs/router.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder of agent specs instead of the built-in specs/agents.
    #[arg(long, env = "TRIAGE_AGENTS", value_name = "DIR")]
    specs: Option<PathBuf>,
    /// Similarity only: never ask the small model.
    #[arg(long)]
    no_slm: bool,
    /// Fit the calibration (similarity weight and biases) on the file and
    /// print it in specs/router.toml's format instead of evaluating.
    #[arg(long)]
    fit: bool,
    /// Write every item's decision as JSON Lines to this file.
    #[arg(long, value_name = "FILE")]
    details: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    let path = args.data.join(&args.file);
    let rows = super::read_pairs(&path, "text", "domain")?;
    let specs = ctx.specs(args.specs.as_deref())?;
    let agents: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    if let Some((i, (_, d))) = rows.iter().enumerate().find(|(_, (_, d))| !agents.contains(d)) {
        bail!(
            "{}: row {} has domain `{d}`, which no specialist serves; the specialists are: {}",
            path.display(),
            i + 1,
            agents.join(", ")
        );
    }
    let config = match &args.config {
        Some(p) => RouterConfig::load(p)?,
        None => RouterConfig::builtin(),
    };
    let mut details = match &args.details {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    eprintln!("routing {} tasks from {}...", rows.len(), path.display());
    let router = ctx
        .router(&specs, config.clone(), !args.no_slm && !args.fit)
        .await?;
    let mut out = std::io::stdout().lock();

    if args.fit {
        let texts: Vec<String> = rows.iter().map(|(t, _)| t.clone()).collect();
        let decisions = router.similarities(texts).await?;
        let sims: Vec<Vec<f64>> = decisions
            .iter()
            .map(|d| {
                agents
                    .iter()
                    .map(|a| {
                        d.scores
                            .iter()
                            .find(|s| &s.label == a)
                            .map_or(0.0, |s| s.similarity)
                    })
                    .collect()
            })
            .collect();
        let truth: Vec<usize> = rows
            .iter()
            .map(|(_, d)| agents.iter().position(|a| a == d).expect("checked above"))
            .collect();
        let c = fit_calibration(&agents, &sims, &truth);
        if args.json {
            writeln!(
                out,
                "{}",
                json!({ "items": rows.len(), "neighbours": config.neighbours, "calibration": c })
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        let bias: Vec<String> = c.bias.iter().map(|(a, b)| format!("{a} = {b}")).collect();
        writeln!(
            out,
            "# fit on {} items of {} (neighbours = {})",
            rows.len(),
            args.file,
            config.neighbours
        )?;
        writeln!(out, "similarity_weight = {}", c.similarity_weight)?;
        writeln!(out, "bias = {{ {} }}", bias.join(", "))?;
        writeln!(out, "# mean NLL {:.4}, ECE {:.4}", c.nll, c.ece)?;
        return Ok(ExitCode::SUCCESS);
    }

    let mut results = Vec::with_capacity(rows.len());
    for (text, domain) in &rows {
        let d = router.route(text, 0).await?;
        let sim_top = d
            .candidates
            .iter()
            .max_by(|a, b| a.similarity_probability.total_cmp(&b.similarity_probability))
            .map(|c| c.agent.clone())
            .unwrap_or_default();
        if let Some(w) = details.as_mut() {
            writeln!(w, "{}", json!({ "domain": domain, "decision": d, "text": text }))?;
        }
        results.push((
            domain.clone(),
            d.agent,
            d.probability,
            d.stage,
            sim_top,
            d.latency_ms,
        ));
    }
    if let Some(mut w) = details {
        w.flush()?;
    }
    let n = results.len() as f64;
    let accuracy = results.iter().filter(|r| r.0 == r.1).count() as f64 / n;
    let similarity_accuracy = results.iter().filter(|r| r.0 == r.4).count() as f64 / n;
    let ece = expected_calibration_error(&results.iter().map(|r| (r.2, r.0 == r.1)).collect::<Vec<_>>());
    let mut confusion: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in &results {
        *confusion.entry((r.0.as_str(), r.1.as_str())).or_default() += 1;
    }
    let mut stages: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &results {
        let e = stages.entry(stage_name(r.3).to_string()).or_default();
        e.0 += 1;
        e.1 += usize::from(r.0 == r.1);
    }
    let mut latencies: Vec<f64> = results.iter().map(|r| r.5).collect();
    latencies.sort_by(f64::total_cmp);
    let (p50, p95, p99) = (
        triage::percentile(&latencies, 0.5),
        triage::percentile(&latencies, 0.95),
        triage::percentile(&latencies, 0.99),
    );
    let per_domain: Vec<serde_json::Value> = agents
        .iter()
        .map(|a| {
            let items = results.iter().filter(|r| &r.0 == a).count();
            let right = results.iter().filter(|r| &r.0 == a && r.1 == *a).count();
            json!({ "domain": a, "items": items, "recall": if items > 0 { right as f64 / items as f64 } else { 0.0 } })
        })
        .collect();

    if args.json {
        let matrix: Vec<serde_json::Value> = agents
            .iter()
            .map(|t| {
                let row: serde_json::Map<String, serde_json::Value> = agents
                    .iter()
                    .map(|p| {
                        (
                            p.clone(),
                            json!(confusion.get(&(t.as_str(), p.as_str())).copied().unwrap_or(0)),
                        )
                    })
                    .collect();
                json!({ "domain": t, "routed_to": row })
            })
            .collect();
        let stages: serde_json::Map<String, serde_json::Value> = stages
            .iter()
            .map(|(s, (k, right))| {
                (
                    s.clone(),
                    json!({ "items": k, "accuracy": *right as f64 / *k as f64 }),
                )
            })
            .collect();
        writeln!(
            out,
            "{}",
            json!({
                "file": path, "items": results.len(), "accuracy": accuracy,
                "similarity_accuracy": similarity_accuracy, "ece": ece,
                "latency_ms": { "p50": p50, "p95": p95, "p99": p99 },
                "stages": stages, "per_domain": per_domain, "confusion": matrix,
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "router on {} ({} items)", path.display(), results.len())?;
    let rows = vec![
        vec!["accuracy".into(), format!("{accuracy:.3}")],
        vec![
            "accuracy, similarity alone".into(),
            format!("{similarity_accuracy:.3}"),
        ],
        vec!["calibration error (ECE)".into(), format!("{ece:.3}")],
        vec!["latency p50".into(), format!("{p50:.1} ms")],
        vec!["latency p95".into(), format!("{p95:.1} ms")],
        vec!["latency p99".into(), format!("{p99:.1} ms")],
    ];
    super::super::print_table(&mut out, &["measure", "value"], &rows)?;
    writeln!(out)?;
    let mut header = vec!["domain \\ routed to"];
    header.extend(agents.iter().map(String::as_str));
    header.push("recall");
    let matrix: Vec<Vec<String>> = agents
        .iter()
        .zip(&per_domain)
        .map(|(t, pd)| {
            let mut row = vec![t.clone()];
            row.extend(agents.iter().map(|p| {
                confusion
                    .get(&(t.as_str(), p.as_str()))
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            }));
            row.push(format!("{:.3}", pd["recall"].as_f64().unwrap_or(0.0)));
            row
        })
        .collect();
    super::super::print_table(&mut out, &header, &matrix)?;
    writeln!(out)?;
    let stage_rows: Vec<Vec<String>> = stages
        .iter()
        .map(|(s, (k, right))| {
            vec![
                s.clone(),
                k.to_string(),
                format!("{:.3}", *right as f64 / *k as f64),
            ]
        })
        .collect();
    super::super::print_table(&mut out, &["decided by", "items", "accuracy"], &stage_rows)?;
    Ok(ExitCode::SUCCESS)
}

fn stage_name(stage: RouteStage) -> &'static str {
    match stage {
        RouteStage::Similarity => "similarity",
        RouteStage::Slm => "similarity + small model",
        RouteStage::Fallback => "fallback",
        RouteStage::Forced => "forced",
    }
}
