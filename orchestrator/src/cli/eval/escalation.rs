//! `triage eval escalation`: does the cascade's confidence separate right
//! answers from wrong ones? Each question of `escalation-dev.jsonl`
//! (fields `question` and `answer`, an integer) goes through the real
//! controller, with every cascade stage forced to run, so both the first
//! answer and the voted one are scored. It prints accuracy, the AUROC of
//! each stage's confidence, and how many answers each stage would keep or
//! escalate at the configured thresholds.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::json;
use triage::controller::{AskRequest, HopStage};
use triage::dispatch::CallOptions;
use triage_tools::arithmetic::final_answer;

use crate::cli::ask::ControllerArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder holding escalation-dev.jsonl (fields `question`, `answer`).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// The labelled file inside --data.
    #[arg(long, default_value = "escalation-dev.jsonl")]
    file: String,
    /// The specialist that answers (default: wherever the router sends
    /// each question).
    #[arg(long, value_name = "NAME")]
    domain: Option<String>,
    /// Only the first N questions.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Longest answer, in tokens (the `ask` tool's default).
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_tokens: usize,
    /// Samples for the voting stage instead of the registry's cascade
    /// setting; 0 measures the first answer only.
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Threshold instead of each specialist's min_confidence.
    #[arg(long, value_name = "P")]
    min_confidence: Option<f64>,
    /// Write every question's answers and confidences as JSON Lines here.
    #[arg(long, value_name = "FILE")]
    details: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// One question's outcome at both stages.
struct Item {
    first_right: bool,
    first_confidence: f64,
    vote_right: bool,
    vote_confidence: f64,
    threshold: f64,
}

pub async fn run(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    let path = args.data.join(&args.file);
    let mut rows = super::read_pairs(&path, "question", "answer")?;
    if let Some(n) = args.limit {
        if n == 0 {
            bail!("--limit must be at least 1");
        }
        rows.truncate(n);
    }
    let mut controller = ctx.controller(&args.controller.options(false)).await?;
    if let Some(n) = args.samples {
        controller.registry.cascade.samples = n;
    }
    let voting = controller.registry.cascade.samples > 0;
    let mut details = match &args.details {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let call = CallOptions::default();
    let mut items = Vec::with_capacity(rows.len());
    for (i, (question, answer)) in rows.iter().enumerate() {
        eprint!("\r{}/{} questions", i + 1, rows.len());
        // A threshold above 1 makes every stage run; the configured one is
        // applied afterwards.
        let request = AskRequest {
            text: question.clone(),
            domain: args.domain.clone(),
            min_confidence: Some(1.01),
            escalate: true,
            max_tokens: Some(args.max_tokens),
            nearest: 0,
        };
        let outcome = controller.ask(&request, &call).await?;
        let spec = controller
            .specs
            .iter()
            .find(|s| s.name == outcome.route.agent)
            .context("the routed specialist has a spec")?;
        let threshold = args.min_confidence.unwrap_or(spec.thresholds.min_confidence);
        let hop = |stage: HopStage| outcome.hops.iter().find(|h| h.stage == stage);
        let (first, vote) = (hop(HopStage::Specialist), hop(HopStage::Samples));
        let right = |h: Option<&triage::controller::Hop>| {
            h.and_then(|h| h.answer.as_deref())
                .and_then(final_answer)
                .is_some_and(|n| &n.normalized == answer)
        };
        let item = Item {
            first_right: right(first),
            first_confidence: first.and_then(|h| h.confidence).unwrap_or(0.0),
            vote_right: right(vote),
            vote_confidence: vote.and_then(|h| h.confidence).unwrap_or(0.0),
            threshold,
        };
        if let Some(w) = details.as_mut() {
            writeln!(
                w,
                "{}",
                json!({
                    "question": question, "answer": answer, "agent": outcome.route.agent,
                    "first": { "answer": first.and_then(|h| h.answer.clone()), "confidence": item.first_confidence, "right": item.first_right, "checks": first.and_then(|h| h.checks.clone()) },
                    "vote": { "answer": vote.and_then(|h| h.answer.clone()), "confidence": item.vote_confidence, "right": item.vote_right, "note": vote.and_then(|h| h.note.clone()), "checks": vote.and_then(|h| h.checks.clone()) },
                })
            )?;
        }
        items.push(item);
    }
    eprintln!();
    controller.shutdown().await;
    if let Some(mut w) = details {
        w.flush()?;
    }

    let n = items.len() as f64;
    let first_acc = items.iter().filter(|i| i.first_right).count() as f64 / n;
    let vote_acc = items.iter().filter(|i| i.vote_right).count() as f64 / n;
    let first_auroc = Auroc::of(
        &items
            .iter()
            .map(|i| (i.first_confidence, i.first_right))
            .collect::<Vec<_>>(),
    );
    let vote_auroc = voting
        .then(|| {
            Auroc::of(
                &items
                    .iter()
                    .map(|i| (i.vote_confidence, i.vote_right))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten();
    // The cascade as configured: the first answer stands when confident,
    // else the vote's when confident, else the question is escalated.
    let kept_first: Vec<&Item> = items
        .iter()
        .filter(|i| i.first_confidence >= i.threshold)
        .collect();
    let kept_vote: Vec<&Item> = items
        .iter()
        .filter(|i| voting && i.first_confidence < i.threshold && i.vote_confidence >= i.threshold)
        .collect();
    let escalated: Vec<&Item> = items
        .iter()
        .filter(|i| i.first_confidence < i.threshold && (!voting || i.vote_confidence < i.threshold))
        .collect();
    let right_of = |v: &[&Item], vote: bool| {
        v.iter()
            .filter(|i| {
                if vote && voting {
                    i.vote_right
                } else {
                    i.first_right
                }
            })
            .count()
    };
    let stages = json!([
        { "stage": "specialist", "kept": kept_first.len(), "right": right_of(&kept_first, false) },
        { "stage": "samples", "kept": kept_vote.len(), "right": right_of(&kept_vote, true) },
        { "stage": "fallback", "escalated": escalated.len(), "right_before_escalation": right_of(&escalated, true) },
    ]);
    let thresholds: std::collections::BTreeSet<String> =
        items.iter().map(|i| format!("{:.2}", i.threshold)).collect();
    let cascade = &controller.registry.cascade;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "file": path, "items": items.len(), "samples": cascade.samples,
                "temperature": cascade.temperature, "max_tokens": args.max_tokens,
                "thresholds": thresholds,
                "first": { "accuracy": first_acc, "auroc": first_auroc },
                "vote": voting.then(|| json!({ "accuracy": vote_acc, "auroc": vote_auroc })),
                "stages": stages,
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "escalation on {} ({} questions; {} samples at temperature {}; threshold {})",
        path.display(),
        items.len(),
        cascade.samples,
        cascade.temperature,
        thresholds.into_iter().collect::<Vec<_>>().join(", ")
    )?;
    let fmt = |a: Option<Auroc>| {
        a.map_or("- (needs right and wrong answers)".into(), |a| {
            format!(
                "{:.3} ± {:.3} ({} right, {} wrong)",
                a.auroc,
                1.96 * a.standard_error,
                a.right,
                a.wrong
            )
        })
    };
    let mut rows = vec![vec![
        "first (greedy)".into(),
        format!("{first_acc:.3}"),
        fmt(first_auroc),
    ]];
    if voting {
        rows.push(vec![
            "confidence-weighted vote".into(),
            format!("{vote_acc:.3}"),
            fmt(vote_auroc),
        ]);
    }
    super::super::print_table(
        &mut out,
        &["answer", "accuracy", "AUROC of its confidence (95% interval)"],
        &rows,
    )?;
    writeln!(out)?;
    super::super::print_table(
        &mut out,
        &["cascade stage", "answers", "of them right"],
        &[
            vec![
                "kept at specialist".into(),
                kept_first.len().to_string(),
                right_of(&kept_first, false).to_string(),
            ],
            vec![
                "kept after samples".into(),
                kept_vote.len().to_string(),
                right_of(&kept_vote, true).to_string(),
            ],
            vec![
                "escalated to fallback".into(),
                escalated.len().to_string(),
                right_of(&escalated, true).to_string(),
            ],
        ],
    )?;
    Ok(ExitCode::SUCCESS)
}

/// How well a confidence ranks right answers above wrong ones.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Auroc {
    pub auroc: f64,
    /// Hanley and McNeil's (1982) standard error: with few right answers
    /// the AUROC is a rough estimate, and this says how rough.
    pub standard_error: f64,
    pub right: usize,
    pub wrong: usize,
}

impl Auroc {
    /// `None` without both right and wrong answers.
    pub fn of(items: &[(f64, bool)]) -> Option<Auroc> {
        let a = auroc(items)?;
        let right = items.iter().filter(|i| i.1).count();
        let wrong = items.len() - right;
        let (np, nn) = (right as f64, wrong as f64);
        let q1 = a / (2.0 - a);
        let q2 = 2.0 * a * a / (1.0 + a);
        let var = (a * (1.0 - a) + (np - 1.0) * (q1 - a * a) + (nn - 1.0) * (q2 - a * a)) / (np * nn);
        Some(Auroc {
            auroc: a,
            standard_error: var.max(0.0).sqrt(),
            right,
            wrong,
        })
    }
}

/// Area under the ROC curve of `score` for telling right (true) from wrong:
/// the chance a random right answer scores above a random wrong one (ties
/// count half). `None` without both kinds.
pub fn auroc(items: &[(f64, bool)]) -> Option<f64> {
    let pos: Vec<f64> = items.iter().filter(|i| i.1).map(|i| i.0).collect();
    let neg: Vec<f64> = items.iter().filter(|i| !i.1).map(|i| i.0).collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in &pos {
        for q in &neg {
            wins += if p > q {
                1.0
            } else if p == q {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::{Auroc, auroc};

    #[test]
    fn auroc_ranks_right_above_wrong() {
        assert_eq!(auroc(&[(0.9, true), (0.1, false)]), Some(1.0));
        assert_eq!(auroc(&[(0.1, true), (0.9, false)]), Some(0.0));
        assert_eq!(auroc(&[(0.5, true), (0.5, false)]), Some(0.5));
        assert_eq!(auroc(&[(0.5, true)]), None);
    }

    #[test]
    fn the_interval_narrows_with_more_answers() {
        let few = Auroc::of(&[(0.9, true), (0.1, false), (0.95, false)]).unwrap();
        let many: Vec<(f64, bool)> = (0..40).map(|i| (f64::from(i), i % 2 == 0)).collect();
        let many = Auroc::of(&many).unwrap();
        assert_eq!((few.right, few.wrong), (1, 2));
        assert!(many.standard_error < few.standard_error, "{many:?} {few:?}");
        assert!((0.0..0.5).contains(&few.standard_error));
    }
}
