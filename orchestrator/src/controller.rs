//! The controller: route a task, dispatch it to the chosen specialist, check
//! the answer's confidence and escalate through the cascade, and record
//! every step in the store.
//!
//! The cascade, for an answer below the task's threshold (the specialist's
//! `min_confidence`, or the caller's):
//! 1. **samples**: more compute on the small model: `cascade.samples`
//!    seeded samples; the answers are grouped (by their final number when
//!    they give one, else by their normalised first sentence) and each group
//!    scores the sum of its answers' confidences; the winner's confidence is
//!    that sum over the number of answers, which is high only when the
//!    samples agree *and* are each confident;
//! 2. **fallback**: the configured fallback agent (any MCP server); without
//!    one, the best answer is returned flagged as low-confidence, and
//!    nothing leaves the machine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use rmcp::model::{CallToolResult, JsonObject};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use triage_agents::AgentSpec;
use triage_tools::arithmetic::final_answer;

use crate::dispatch::{self, CallOptions, CallOutcome};
use crate::registry::{Agent, Registry};
use crate::router::{RouteDecision, Router};
use crate::store::{CallRecord, RouteRecord, Store, now};

/// One task for the controller.
#[derive(Debug, Clone, Default)]
pub struct AskRequest {
    pub text: String,
    /// Send it to this specialist instead of routing.
    pub domain: Option<String>,
    /// Threshold instead of the specialist's `min_confidence`.
    pub min_confidence: Option<f64>,
    /// Whether the cascade may spend more compute or escalate.
    pub escalate: bool,
    pub max_tokens: Option<usize>,
    /// Nearest examples to list per routing candidate.
    pub nearest: usize,
}

/// A stage of the cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HopStage {
    /// The routed specialist's first answer.
    Specialist,
    /// Several samples from the small model, voted.
    Samples,
    /// The configured fallback agent.
    Fallback,
}

/// One step of the escalation path.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hop {
    pub stage: HopStage,
    pub agent: String,
    /// The answer's confidence at this stage (none when the agent reports
    /// none).
    pub confidence: Option<f64>,
    /// `kept` (the answer stood), `escalated` (below the threshold, passed
    /// on), `flagged` (below, nowhere to go), or `failed`.
    pub outcome: String,
    pub latency_ms: f64,
    /// The answer this stage settled on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the agent's confidence was made of, as it reported it (for our
    /// specialists: fluency, completion, the final answer's probability,
    /// arithmetic steps checked and wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Value>,
}

/// The controller's answer.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AskOutcome {
    pub answer: String,
    /// The agent whose answer this is.
    pub agent: String,
    pub agent_version: Option<String>,
    pub model: Option<String>,
    pub confidence: Option<f64>,
    /// The threshold the answer was held to.
    pub threshold: f64,
    /// Below the threshold with no fallback to take it.
    pub low_confidence: bool,
    pub route: RouteDecision,
    pub hops: Vec<Hop>,
    /// Tokens generated over all hops.
    pub tokens: u64,
    pub latency_ms: f64,
    /// Problems recording the run (the answer stands).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Router, registry and store together.
#[derive(Debug)]
pub struct Controller {
    pub router: Router,
    pub registry: Registry,
    pub store: Arc<dyn Store>,
    pub specs: Vec<AgentSpec>,
}

/// An answer from the small model with what it reported.
#[derive(Debug, Clone)]
struct Answer {
    text: String,
    confidence: Option<f64>,
    agent_version: Option<String>,
    model: Option<String>,
    tokens: u64,
    checks: Option<Value>,
}

impl Controller {
    /// Routes (unless a domain is given), records the decision, and returns
    /// it.
    pub async fn route(
        &self,
        text: &str,
        domain: Option<&str>,
        nearest: usize,
    ) -> anyhow::Result<(RouteDecision, Vec<String>)> {
        if text.trim().is_empty() {
            bail!("the task is empty: give the text to route");
        }
        let decision = match domain {
            Some(d) => {
                if !self.specs.iter().any(|s| s.name == d) {
                    let known: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
                    bail!(
                        "there is no specialist `{d}`; choose one of: {}",
                        known.join(", ")
                    );
                }
                self.router.forced(d)
            }
            None => self.router.route(text, nearest).await?,
        };
        let mut warnings = Vec::new();
        let record = RouteRecord {
            at: now(),
            task: text.chars().take(2000).collect(),
            decision: decision.clone(),
        };
        if let Err(e) = self.store.record_route(&record) {
            warnings.push(format!("the routing decision was not recorded: {e}"));
        }
        Ok((decision, warnings))
    }

    /// Answers one task: route, dispatch, cascade, record.
    pub async fn ask(&self, req: &AskRequest, options: &CallOptions) -> anyhow::Result<AskOutcome> {
        let start = Instant::now();
        let (route, mut warnings) = self.route(&req.text, req.domain.as_deref(), req.nearest).await?;
        let agent = self.registry.for_spec(&route.agent)?;
        let spec = agent.spec.clone().context("a routed agent has a spec")?;
        let threshold = req.min_confidence.unwrap_or(spec.thresholds.min_confidence);
        let mut calls = Vec::new();
        let mut hops = Vec::new();
        let mut tokens = 0;

        let first = self
            .ask_small(&agent, &req.text, req.max_tokens, None, options, &mut calls)
            .await?;
        tokens += first.tokens;
        let mut best = first.clone();
        let confident = |c: Option<f64>| c.is_some_and(|c| c >= threshold);
        let mut settled = confident(first.confidence) || !req.escalate;
        hops.push(Hop {
            stage: HopStage::Specialist,
            agent: agent.name().into(),
            confidence: first.confidence,
            outcome: if confident(first.confidence) {
                "kept"
            } else if req.escalate {
                "escalated"
            } else {
                "flagged"
            }
            .into(),
            latency_ms: calls.last().map_or(0.0, |c: &CallRecord| c.latency_ms),
            answer: Some(first.text.clone()),
            note: None,
            checks: first.checks.clone(),
        });

        let cascade = &self.registry.cascade;
        if !settled && cascade.samples > 0 {
            let t = Instant::now();
            let mut answers = vec![first.clone()];
            for seed in 1..=cascade.samples as u64 {
                let a = self
                    .ask_small(
                        &agent,
                        &req.text,
                        req.max_tokens,
                        Some((cascade.temperature, seed)),
                        options,
                        &mut calls,
                    )
                    .await?;
                tokens += a.tokens;
                answers.push(a);
            }
            let (winner, confidence, votes) = vote(&answers);
            best = Answer {
                confidence: Some(confidence),
                ..winner
            };
            settled = confident(best.confidence);
            hops.push(Hop {
                stage: HopStage::Samples,
                agent: agent.name().into(),
                confidence: best.confidence,
                outcome: if settled { "kept" } else { "escalated" }.into(),
                latency_ms: t.elapsed().as_secs_f64() * 1000.0,
                answer: Some(best.text.clone()),
                note: Some(format!(
                    "{} answers at temperature {}; the winner had {votes} vote{}",
                    answers.len(),
                    cascade.temperature,
                    if votes == 1 { "" } else { "s" }
                )),
                checks: best.checks.clone(),
            });
        }

        let mut answered_by = agent.name().to_string();
        let mut low_confidence = !confident(best.confidence);
        if !settled {
            match &cascade.fallback {
                None => hops.push(Hop {
                    stage: HopStage::Fallback,
                    agent: "-".into(),
                    confidence: None,
                    outcome: "flagged".into(),
                    latency_ms: 0.0,
                    answer: None,
                    note: Some("no fallback agent is configured, so the answer stays local, flagged as low-confidence".into()),
                    checks: None,
                }),
                Some(f) => {
                    let fb = self.registry.get(&f.agent)?;
                    let mut args = JsonObject::new();
                    args.insert(f.argument.clone(), Value::String(req.text.clone()));
                    let t = Instant::now();
                    let result = self.call_recorded(&fb, &f.tool, args, options, &mut calls).await;
                    let failure = match result {
                        Ok(r) if r.result.is_error != Some(true) => {
                            let a = read_answer(&r.result);
                            tokens += a.tokens;
                            hops.push(Hop {
                                stage: HopStage::Fallback,
                                agent: fb.name().into(),
                                confidence: a.confidence,
                                outcome: "kept".into(),
                                latency_ms: t.elapsed().as_secs_f64() * 1000.0,
                                answer: Some(a.text.clone()),
                                note: None,
                                checks: a.checks.clone(),
                            });
                            best = a;
                            answered_by = fb.name().into();
                            low_confidence = false;
                            None
                        }
                        Ok(r) => Some(format!("the fallback returned an error: {}", text_of(&r.result))),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(note) = failure {
                        hops.push(Hop {
                            stage: HopStage::Fallback,
                            agent: fb.name().into(),
                            confidence: None,
                            outcome: "failed".into(),
                            latency_ms: t.elapsed().as_secs_f64() * 1000.0,
                            answer: None,
                            note: Some(note),
                            checks: None,
                        });
                    }
                }
            }
        }
        // Calls to the small model that were passed over count as
        // escalations of that agent.
        if hops.iter().any(|h| h.outcome == "escalated") {
            for c in calls.iter_mut().filter(|c| c.agent == agent.name()) {
                c.escalated = true;
            }
        }
        let outcome = AskOutcome {
            answer: best.text,
            agent: answered_by,
            agent_version: best.agent_version,
            model: best.model,
            confidence: best.confidence,
            threshold,
            low_confidence,
            route,
            hops,
            tokens,
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
            warnings: Vec::new(),
        };
        if let Err(e) = self.store.record_calls(&calls) {
            warnings.push(format!("the calls were not recorded: {e}"));
        }
        let mut record = serde_json::to_value(&outcome)?;
        record["at"] = json!(now());
        record["task"] = json!(req.text.chars().take(2000).collect::<String>());
        if let Err(e) = self.store.record("asks", &record) {
            warnings.push(format!("the answer was not recorded: {e}"));
        }
        Ok(AskOutcome { warnings, ..outcome })
    }

    /// One `ask` call to a specialist (sampled when `sample` gives a
    /// temperature and seed).
    async fn ask_small(
        &self,
        agent: &Arc<Agent>,
        text: &str,
        max_tokens: Option<usize>,
        sample: Option<(f64, u64)>,
        options: &CallOptions,
        calls: &mut Vec<CallRecord>,
    ) -> anyhow::Result<Answer> {
        let mut args = JsonObject::new();
        args.insert("question".into(), json!(text));
        if let Some(m) = max_tokens {
            args.insert("max_tokens".into(), json!(m));
        }
        if let Some((temperature, seed)) = sample {
            args.insert("temperature".into(), json!(temperature));
            args.insert("seed".into(), json!(seed));
        }
        let r = self.call_recorded(agent, "ask", args, options, calls).await?;
        if r.result.is_error == Some(true) {
            bail!(
                "the {} specialist could not answer: {}",
                agent.name(),
                text_of(&r.result)
            );
        }
        Ok(read_answer(&r.result))
    }

    /// A dispatched call, recorded whether it succeeded or not.
    async fn call_recorded(
        &self,
        agent: &Arc<Agent>,
        tool: &str,
        args: JsonObject,
        options: &CallOptions,
        calls: &mut Vec<CallRecord>,
    ) -> anyhow::Result<CallOutcome> {
        let at = now();
        let t = Instant::now();
        let result = dispatch::call(agent, tool, args, options).await;
        let (ok, error, attempts, tokens, confidence) = match &result {
            Ok(r) => {
                let a = read_answer(&r.result);
                let ok = r.result.is_error != Some(true);
                (
                    ok,
                    (!ok).then(|| text_of(&r.result)),
                    r.attempts,
                    Some(a.tokens),
                    a.confidence,
                )
            }
            Err(e) => (false, Some(e.to_string()), e.attempts(), None, None),
        };
        calls.push(CallRecord {
            at,
            agent: agent.name().into(),
            tool: tool.into(),
            ok,
            error,
            latency_ms: t.elapsed().as_secs_f64() * 1000.0,
            attempts,
            tokens,
            confidence,
            escalated: false,
        });
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                // Record the failure before reporting it.
                if let Err(se) = self.store.record_calls(calls) {
                    tracing::warn!("the failed call was not recorded: {se}");
                }
                calls.clear();
                Err(e.into())
            }
        }
    }

    /// Closes every agent connection.
    pub async fn shutdown(&self) {
        self.registry.shutdown().await;
    }
}

/// The answer in a tool result: structured `answer` (or the text content),
/// and what the agent reported about it.
fn read_answer(r: &CallToolResult) -> Answer {
    let s = r.structured_content.as_ref();
    let field = |k: &str| s.and_then(|v| v.get(k));
    Answer {
        text: field("answer")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| text_of(r)),
        confidence: field("confidence").and_then(Value::as_f64),
        agent_version: field("agent_version").and_then(Value::as_str).map(str::to_string),
        model: field("model").and_then(Value::as_str).map(str::to_string),
        tokens: field("tokens").and_then(Value::as_u64).unwrap_or(0),
        checks: field("checks").cloned(),
    }
}

/// The text content of a tool result.
pub fn text_of(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What an answer says, for voting: its final number when it gives one,
/// else its first sentence, lower-cased, letters and digits only.
pub fn answer_key(text: &str) -> String {
    if let Some(n) = final_answer(text) {
        return n.normalized;
    }
    let first = text
        .split(['.', '\n', '!', '?'])
        .find(|s| !s.trim().is_empty())
        .unwrap_or("");
    first
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Confidence-weighted vote: the winning group's most confident answer,
/// the group's summed confidence over the number of answers, and its size.
fn vote(answers: &[Answer]) -> (Answer, f64, usize) {
    let mut groups: BTreeMap<String, Vec<&Answer>> = BTreeMap::new();
    for a in answers {
        groups.entry(answer_key(&a.text)).or_default().push(a);
    }
    let weight = |g: &[&Answer]| g.iter().map(|a| a.confidence.unwrap_or(0.0)).sum::<f64>();
    let (_, winners) = groups
        .iter()
        .max_by(|a, b| weight(a.1).total_cmp(&weight(b.1)))
        .expect("at least one answer");
    let best = winners
        .iter()
        .max_by(|a, b| {
            a.confidence
                .unwrap_or(0.0)
                .total_cmp(&b.confidence.unwrap_or(0.0))
        })
        .expect("a group has answers");
    (
        (*best).clone(),
        weight(winners) / answers.len() as f64,
        winners.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_keyed_by_their_final_number_or_first_sentence() {
        assert_eq!(answer_key("It costs $1,200.00 in total."), "1200");
        assert_eq!(answer_key("So 3 + 4 = 7. The answer is 7, not 9."), "7");
        assert_eq!(
            answer_key("Canberra is the capital. It is small."),
            "canberra is the capital"
        );
    }

    #[test]
    fn the_vote_weighs_agreement_and_confidence() {
        let a = |text: &str, c: f64| Answer {
            text: text.into(),
            confidence: Some(c),
            agent_version: None,
            model: None,
            tokens: 1,
            checks: None,
        };
        let answers = [
            a("So 18 eggs.", 0.4),
            a("The answer is 18", 0.5),
            a("It is 20.", 0.9),
        ];
        let (winner, confidence, votes) = vote(&answers);
        assert_eq!(winner.text, "It is 20.");
        assert!((confidence - 0.3).abs() < 1e-9);
        assert_eq!(votes, 1);
        let answers = [a("18", 0.6), a("18 eggs", 0.6), a("20", 0.7)];
        let (winner, confidence, votes) = vote(&answers);
        assert_eq!(answer_key(&winner.text), "18");
        assert!((confidence - 0.4).abs() < 1e-9);
        assert_eq!(votes, 2);
        assert_eq!(
            answer_key("Paris is the capital. It is big."),
            "paris is the capital"
        );
    }
}
