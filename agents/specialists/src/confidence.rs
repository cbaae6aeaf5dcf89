//! How sure a generated answer deserves to be: the model's own token
//! probabilities, checked against what code can verify.
//!
//! A 135M model writes fluent nonsense with high token probabilities, so
//! fluency alone says little about being right. Three facts sharpen it:
//!
//! - **the answer itself**: when the text settles on a number, the
//!   probability the model gave to that number's tokens (digits are single
//!   tokens), rather than to the words around it;
//! - **completion**: an answer cut off by the token limit never reached its
//!   conclusion;
//! - **arithmetic**: every stated step (`45 * 3 = 140`) recomputed by
//!   [`triage_tools::arithmetic`]; each wrong step halves the confidence,
//!   and a final number that no correct step derives counts against it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use triage_runtime::{FinishReason, Generation};
use triage_tools::arithmetic::{ArithmeticReport, check_arithmetic};

/// Factor for an answer cut off by the token limit.
const CUT_OFF: f64 = 0.5;
/// Factor for each arithmetic step that is wrong.
const WRONG_STEP: f64 = 0.5;
/// Factor for a final number that shows its working but no correct step
/// computes it.
const NOT_DERIVED: f64 = 0.75;

/// What the confidence of an answer was made of.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct AnswerChecks {
    /// Geometric mean of the generated tokens' probabilities.
    pub fluency: f64,
    /// Whether the model ended the answer itself (not the token limit).
    pub finished: bool,
    /// The number the answer settles on, if any.
    pub final_answer: Option<String>,
    /// Geometric mean probability of the final number's tokens.
    pub answer_probability: Option<f64>,
    /// Arithmetic steps found and recomputed.
    pub arithmetic_steps: usize,
    /// How many of them are wrong.
    pub arithmetic_wrong: usize,
    /// Whether a correct step computes the final number (none without
    /// steps or without a final number).
    pub derived: Option<bool>,
}

/// The confidence of a finished generation, 0 to 1, and what it was made of.
pub fn assess(g: &Generation) -> (f64, AnswerChecks) {
    let report = check_arithmetic(&g.text);
    let checks = AnswerChecks {
        fluency: f64::from(g.mean_logprob()).exp(),
        finished: matches!(g.finish_reason, FinishReason::Eos | FinishReason::Stop),
        answer_probability: answer_probability(g, &report),
        final_answer: report.final_answer.as_ref().map(|f| f.normalized.clone()),
        arithmetic_steps: report.steps.len(),
        arithmetic_wrong: report.wrong,
        derived: report.derived,
    };
    (confidence(&checks, &report), checks)
}

fn confidence(c: &AnswerChecks, report: &ArithmeticReport) -> f64 {
    // The answer's own probability where the text works towards a number;
    // an incidental number in prose says nothing about the prose.
    let works_out = !report.steps.is_empty() || report.final_answer.as_ref().is_some_and(|f| f.explicit);
    let mut p = match c.answer_probability {
        Some(a) if works_out => a,
        _ => c.fluency,
    };
    if !c.finished {
        p *= CUT_OFF;
    }
    p *= WRONG_STEP.powi(c.arithmetic_wrong as i32);
    if c.derived == Some(false) {
        p *= NOT_DERIVED;
    }
    p.clamp(0.0, 1.0)
}

/// Geometric mean probability of the tokens that wrote the final number,
/// found by laying the tokens' released text along the generated text.
fn answer_probability(g: &Generation, report: &ArithmeticReport) -> Option<f64> {
    let f = report.final_answer.as_ref()?;
    let mut at = 0;
    let mut logprobs = Vec::new();
    for t in &g.tokens {
        let end = at + t.text.len();
        if end > f.start && at < f.end {
            logprobs.push(t.logprob);
        }
        at = end;
    }
    if logprobs.is_empty() || at != g.text.len() {
        return None;
    }
    let mean = logprobs.iter().map(|&l| f64::from(l)).sum::<f64>() / logprobs.len() as f64;
    Some(mean.exp())
}

#[cfg(test)]
mod tests {
    use triage_runtime::{GenerationStats, TokenEvent};

    use super::*;

    fn generation(pieces: &[(&str, f32)], finish: FinishReason) -> Generation {
        Generation {
            text: pieces.iter().map(|p| p.0).collect(),
            tokens: pieces
                .iter()
                .enumerate()
                .map(|(i, &(text, logprob))| TokenEvent {
                    id: i as u32,
                    logprob,
                    text: text.into(),
                })
                .collect(),
            finish_reason: finish,
            stats: GenerationStats::default(),
        }
    }

    #[test]
    fn the_answer_tokens_carry_the_confidence() {
        let sure = generation(
            &[
                ("3 * 4 = ", -0.1),
                ("1", -0.05),
                ("2", -0.05),
                (". The answer is ", -0.1),
                ("1", -0.05),
                ("2", -0.05),
            ],
            FinishReason::Eos,
        );
        let (c, checks) = assess(&sure);
        assert_eq!(checks.final_answer.as_deref(), Some("12"));
        assert_eq!(checks.derived, Some(true));
        assert!((c - (-0.05f64).exp()).abs() < 1e-6, "{c}");

        let unsure = generation(
            &[
                ("3 * 4 = ", -0.1),
                ("1", -0.05),
                ("2", -0.05),
                (". The answer is ", -0.1),
                ("1", -2.0),
                ("3", -2.0),
            ],
            FinishReason::Eos,
        );
        let (c2, checks) = assess(&unsure);
        // 13 is not what 3 * 4 makes.
        assert_eq!(checks.derived, Some(false));
        assert!(c2 < c * 0.2, "{c2}");
    }

    #[test]
    fn wrong_arithmetic_and_cut_off_answers_lose_confidence() {
        let right = generation(&[("45 * 3 = 135", -0.2)], FinishReason::Eos);
        let wrong = generation(&[("45 * 3 = 140", -0.2)], FinishReason::Eos);
        let cut = generation(&[("45 * 3 = 135", -0.2)], FinishReason::MaxTokens);
        let (r, w, c) = (assess(&right).0, assess(&wrong).0, assess(&cut).0);
        assert!((w - r * WRONG_STEP * NOT_DERIVED).abs() < 1e-9, "{r} {w}");
        assert!((c - r * CUT_OFF).abs() < 1e-9, "{r} {c}");
    }

    #[test]
    fn prose_keeps_its_fluency() {
        let g = generation(
            &[
                ("Canberra is the capital, founded in ", -0.3),
                ("1", -1.0),
                ("913", -1.0),
                (".", -0.3),
            ],
            FinishReason::Eos,
        );
        let (c, checks) = assess(&g);
        assert_eq!(checks.final_answer.as_deref(), Some("1913"));
        assert!((c - checks.fluency).abs() < 1e-9);
    }
}
