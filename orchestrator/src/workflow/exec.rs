//! The executor: runs a plan's steps as their needs finish, in parallel up
//! to the plan's concurrency (fan-out items too), and records every step
//! durably in the run's store.
//!
//! A step whose `when` is false is skipped, and so is every step that
//! needs it. A step that fails (after its retries) fails the run: no new
//! step starts, the running ones finish, and the run is recorded as
//! failed; `triage runs resume` runs the failed step again. Cancelling
//! (Ctrl-C, `triage runs cancel`) cancels the calls in flight on their
//! agents and records the run as cancelled. A run resumed after a crash
//! runs only what had not completed: completed steps and fan-out items are
//! read back from the store, never run again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rmcp::model::JsonObject;
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::plan::{Action, Agents, Plan, Step};
use super::runs::{LiveRuns, RunMeta, RunStatus, RunStore, StepRecord, StepStatus, new_run_id};
use super::template;
use crate::controller::{AskRequest, Controller, HopStage, text_of};
use crate::dispatch::{self, CallOptions};
use crate::store::now;

/// The file `triage runs cancel` writes into a running run's folder.
pub const CANCEL_FILE: &str = "cancel-requested";

/// What the executor reports as it goes (for the CLI's progress lines).
#[derive(Debug, Clone)]
pub enum Progress {
    /// The run has its id and is about to start its steps.
    RunStarted { id: String, steps: usize },
    StepStarted {
        step: String,
        what: String,
        items: Option<usize>,
    },
    ItemFinished {
        step: String,
        index: Option<usize>,
        done: usize,
        total: usize,
    },
    StepFinished {
        step: String,
        status: StepStatus,
        duration_ms: f64,
        confidence: Option<f64>,
        note: Option<String>,
    },
    /// Completed before this process started (a resumed run).
    StepRestored { step: String, status: StepStatus },
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Cancelling it cancels the run.
    pub cancel: CancellationToken,
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// Where the run's store is published while it runs, for readers in
    /// this process.
    pub live: Option<LiveRuns>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub id: String,
    pub status: RunStatus,
    pub outputs: Option<Value>,
    pub error: Option<String>,
    /// Steps run by this process (not restored from the store).
    pub steps_run: usize,
    /// Time spent inside agent calls, summed over steps and items.
    pub call_ms: f64,
    pub wall_ms: f64,
}

/// The inputs a run gets: `given` checked against the plan's declared
/// inputs, defaults filled in.
pub fn resolve_inputs(plan: &Plan, given: BTreeMap<String, Value>) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for name in given.keys() {
        if !plan.inputs.contains_key(name) {
            let known: Vec<&str> = plan.inputs.keys().map(String::as_str).collect();
            bail!(
                "workflow `{}` has no input `{name}`; its inputs are: {}",
                plan.name,
                if known.is_empty() {
                    "(none)".into()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    for (name, input) in &plan.inputs {
        let value = match given.get(name).or(input.default.as_ref()) {
            Some(v) => v.clone(),
            None => bail!(
                "workflow `{}` needs the input `{name}` ({}{})",
                plan.name,
                input.kind.name(),
                if input.description.is_empty() {
                    String::new()
                } else {
                    format!(": {}", input.description)
                }
            ),
        };
        if !input.kind.admits(&value) {
            bail!("input `{name}` must be a {}, not {value}", input.kind.name());
        }
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// Starts a new run of `plan`.
pub async fn start(
    controller: Arc<Controller>,
    plan: Plan,
    inputs: Map<String, Value>,
    runs: &std::path::Path,
    options: RunOptions,
) -> anyhow::Result<RunOutcome> {
    let meta = RunMeta {
        id: new_run_id(),
        workflow: plan.name.clone(),
        version: plan.version.clone(),
        path: plan.path.clone(),
        source: plan.source.clone(),
        inputs: Value::Object(inputs),
        status: RunStatus::Running,
        created_at: now(),
        updated_at: now(),
        resumes: 0,
        outputs: None,
        error: None,
        pid: Some(std::process::id()),
    };
    let store = RunStore::create(runs, &meta)?;
    store.event(
        "run_started",
        None,
        None,
        Some(format!("{} {}", plan.name, plan.version)),
    )?;
    execute(controller, Arc::new(plan), Arc::new(store), meta, options).await
}

/// Resumes the run `id`: what completed stays, the rest runs.
pub async fn resume(
    controller: Arc<Controller>,
    agents: &Agents,
    runs: &std::path::Path,
    id: &str,
    options: RunOptions,
) -> anyhow::Result<RunOutcome> {
    let store = RunStore::open(runs, id)?;
    let mut meta = store.meta()?;
    if meta.status == RunStatus::Completed {
        return Ok(RunOutcome {
            id: meta.id,
            status: RunStatus::Completed,
            outputs: meta.outputs,
            error: None,
            steps_run: 0,
            call_ms: 0.0,
            wall_ms: 0.0,
        });
    }
    let plan = Plan::parse(&meta.path, &meta.source, agents)
        .map_err(|e| anyhow::anyhow!("the run's workflow no longer validates against the registry:\n{e}"))?;
    meta.status = RunStatus::Running;
    meta.resumes += 1;
    meta.pid = Some(std::process::id());
    meta.error = None;
    meta.updated_at = now();
    store.set_meta(&meta)?;
    store.event(
        "run_resumed",
        None,
        None,
        Some(format!("resume {}", meta.resumes)),
    )?;
    execute(controller, Arc::new(plan), Arc::new(store), meta, options).await
}

/// A finished step as later steps see it.
#[derive(Debug, Clone)]
struct Done {
    status: StepStatus,
    view: Value,
}

struct Exec {
    controller: Arc<Controller>,
    plan: Arc<Plan>,
    store: Arc<RunStore>,
    inputs: Value,
    sem: Arc<Semaphore>,
    cancel: CancellationToken,
    progress: Option<mpsc::UnboundedSender<Progress>>,
    /// Completed fan-out items from before, by step.
    items: BTreeMap<String, BTreeMap<usize, StepRecord>>,
}

async fn execute(
    controller: Arc<Controller>,
    plan: Arc<Plan>,
    store: Arc<RunStore>,
    mut meta: RunMeta,
    options: RunOptions,
) -> anyhow::Result<RunOutcome> {
    let wall = Instant::now();
    let n = plan.steps.len();
    let _published = options.live.clone().map(|live| {
        live.insert(&meta.id, store.clone());
        Published(live, meta.id.clone())
    });
    if let Some(tx) = &options.progress {
        let _ = tx.send(Progress::RunStarted {
            id: meta.id.clone(),
            steps: n,
        });
    }
    let mut done: Vec<Option<Done>> = vec![None; n];
    let mut items: BTreeMap<String, BTreeMap<usize, StepRecord>> = BTreeMap::new();
    for rec in store.steps()? {
        if rec.status != StepStatus::Completed && rec.status != StepStatus::Skipped {
            continue;
        }
        match rec.item {
            Some(i) => {
                items.entry(rec.step.clone()).or_default().insert(i, rec);
            }
            None => {
                if let Some(i) = plan.step_index(&rec.step) {
                    if let Some(tx) = &options.progress {
                        let _ = tx.send(Progress::StepRestored {
                            step: rec.step.clone(),
                            status: rec.status,
                        });
                    }
                    done[i] = Some(Done {
                        status: rec.status,
                        view: view_of(&rec),
                    });
                }
            }
        }
    }
    let exec = Arc::new(Exec {
        controller,
        plan: plan.clone(),
        store: store.clone(),
        inputs: meta.inputs.clone(),
        sem: Arc::new(Semaphore::new(plan.concurrency)),
        cancel: options.cancel.clone(),
        progress: options.progress.clone(),
        items,
    });

    // `triage runs cancel ID` from another process leaves a file here.
    let _ = std::fs::remove_file(store.dir().join(CANCEL_FILE));
    let watcher = {
        let file = store.dir().join(CANCEL_FILE);
        let token = options.cancel.clone();
        tokio::spawn(async move {
            while !file.exists() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            token.cancel();
        })
    };
    let mut running: JoinSet<(usize, anyhow::Result<(Done, f64)>)> = JoinSet::new();
    let mut started = vec![false; n];
    let mut failure: Option<String> = None;
    let mut steps_run = 0;
    let mut call_ms = 0.0;
    loop {
        // Start (or skip) every step whose needs are done.
        let mut changed = true;
        while changed && failure.is_none() && !options.cancel.is_cancelled() {
            changed = false;
            for &i in &plan.order {
                if started[i] || done[i].is_some() {
                    continue;
                }
                let needs = &plan.steps[i].needs;
                if !needs.iter().all(|&j| done[j].is_some()) {
                    continue;
                }
                started[i] = true;
                changed = true;
                if let Some(&j) = needs
                    .iter()
                    .find(|&&j| done[j].as_ref().is_some_and(|d| d.status == StepStatus::Skipped))
                {
                    let d = exec.skip(i, &format!("needs `{}`, which was skipped", plan.steps[j].id))?;
                    done[i] = Some(d);
                    continue;
                }
                let ctx = context(&exec.inputs, &plan, &done, Some(needs));
                let e = exec.clone();
                running.spawn(async move { (i, e.step(i, ctx).await) });
            }
        }
        if running.is_empty() {
            break;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, result) = joined.context("a step task panicked")?;
        match result {
            Ok((d, ms)) => {
                steps_run += 1;
                call_ms += ms;
                if d.status == StepStatus::Failed && failure.is_none() {
                    failure = Some(format!(
                        "step `{}` failed: {}",
                        plan.steps[i].id,
                        d.view["error"].as_str().unwrap_or("see `triage runs show`")
                    ));
                }
                done[i] = Some(d);
            }
            Err(e) => {
                failure.get_or_insert_with(|| format!("step `{}`: {e:#}", plan.steps[i].id));
            }
        }
    }

    watcher.abort();
    let _ = std::fs::remove_file(store.dir().join(CANCEL_FILE));
    let cancelled = options.cancel.is_cancelled();
    let unfinished = done.iter().any(|d| {
        d.as_ref()
            .is_none_or(|d| !matches!(d.status, StepStatus::Completed | StepStatus::Skipped))
    });
    let (status, error, outputs) = if cancelled && unfinished {
        (RunStatus::Cancelled, Some("cancelled".to_string()), None)
    } else if let Some(f) = failure {
        (RunStatus::Failed, Some(f), None)
    } else {
        let ctx = context(&exec.inputs, &plan, &done, None);
        let mut outputs = Map::new();
        let mut error = None;
        for (name, tpl) in &plan.outputs {
            match template::render_str(tpl, &ctx) {
                Ok(v) => {
                    outputs.insert(name.clone(), v);
                }
                Err(e) => {
                    error = Some(format!("output `{name}`: {e}"));
                    break;
                }
            }
        }
        match error {
            Some(e) => (RunStatus::Failed, Some(e), None),
            None => (RunStatus::Completed, None, Some(Value::Object(outputs))),
        }
    };
    let kind = match status {
        RunStatus::Completed => "run_completed",
        RunStatus::Cancelled => "run_cancelled",
        _ => "run_failed",
    };
    store.event(kind, None, None, error.clone())?;
    meta.status = status;
    meta.error = error.clone();
    meta.outputs = outputs.clone();
    meta.pid = None;
    meta.updated_at = now();
    store.set_meta(&meta)?;
    Ok(RunOutcome {
        id: meta.id,
        status,
        outputs,
        error,
        steps_run,
        call_ms,
        wall_ms: wall.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Withdraws a run from [`LiveRuns`] when its execution ends, however it
/// ends.
struct Published(LiveRuns, String);

impl Drop for Published {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// The template context: inputs and the finished steps in `only` (a
/// step's needs: the only steps its templates can read), or all of them.
fn context(inputs: &Value, plan: &Plan, done: &[Option<Done>], only: Option<&[usize]>) -> Value {
    let pick = |i: usize| {
        done[i]
            .as_ref()
            .map(|d| (plan.steps[i].id.clone(), d.view.clone()))
    };
    let steps: Map<String, Value> = match only {
        Some(needs) => needs.iter().filter_map(|&i| pick(i)).collect(),
        None => (0..plan.steps.len()).filter_map(pick).collect(),
    };
    json!({ "inputs": inputs, "steps": steps })
}

/// What later steps read of a finished step: `steps.ID.output`, and its
/// status, agent and confidence.
fn view_of(rec: &StepRecord) -> Value {
    json!({
        "output": rec.output.clone().unwrap_or(Value::Null),
        "status": rec.status,
        "agent": rec.agent,
        "confidence": rec.confidence,
        "low_confidence": rec.low_confidence,
        "error": rec.error,
    })
}

/// The result of one call (a step, or one fan-out item).
struct Called {
    output: Value,
    input: Value,
    agent: Option<String>,
    tool: Option<String>,
    model: Option<String>,
    agent_version: Option<String>,
    confidence: Option<f64>,
    escalations: Vec<String>,
    low_confidence: bool,
    attempts: u32,
    ms: f64,
}

impl Exec {
    fn report(&self, p: Progress) {
        if let Some(tx) = &self.progress {
            let _ = tx.send(p);
        }
    }

    fn record(
        &self,
        step: &Step,
        item: Option<usize>,
        status: StepStatus,
        started: &str,
        t: Instant,
    ) -> StepRecord {
        StepRecord {
            step: step.id.clone(),
            item,
            status,
            started_at: started.to_string(),
            finished_at: Some(now()),
            duration_ms: Some(t.elapsed().as_secs_f64() * 1000.0),
            attempts: 0,
            input: Value::Null,
            output: None,
            agent: None,
            tool: None,
            model: None,
            agent_version: None,
            confidence: None,
            escalations: Vec::new(),
            low_confidence: false,
            error: None,
        }
    }

    fn skip(&self, i: usize, why: &str) -> anyhow::Result<Done> {
        let step = &self.plan.steps[i];
        let mut rec = self.record(step, None, StepStatus::Skipped, &now(), Instant::now());
        rec.error = Some(why.to_string());
        let why = Some(why.to_string());
        Ok(self.finish(rec, "step_skipped", why.clone(), why, 0.0)?.0)
    }

    /// Runs step `i` to its end: skipped, completed, failed or cancelled.
    /// Returns the time spent in calls too.
    async fn step(self: Arc<Self>, i: usize, ctx: Value) -> anyhow::Result<(Done, f64)> {
        let step = &self.plan.steps[i];
        if let Some(w) = &step.when {
            match template::eval_condition(w, &ctx) {
                Ok(true) => {}
                Ok(false) => return Ok((self.skip(i, &format!("`when: {w}` is false"))?, 0.0)),
                Err(e) => {
                    return self.finish_failed(step, &now(), Instant::now(), format!("`when`: {e}"), 0.0);
                }
            }
        }
        let started = now();
        let t = Instant::now();
        let what = match &step.action {
            Action::Tool { agent, tool } => format!("{agent}/{tool}"),
            Action::Ask { agent: Some(a), .. } => format!("{a}/ask"),
            Action::Ask { agent: None, .. } => "routed ask".into(),
        };
        let Some(expr) = &step.for_each else {
            self.report(Progress::StepStarted {
                step: step.id.clone(),
                what,
                items: None,
            });
            self.store.event("step_started", Some(&step.id), None, None)?;
            let called = {
                let _permit = self.sem.acquire().await.context("the executor stopped")?;
                self.call(step, &ctx).await
            };
            return match called {
                Ok(c) => {
                    let ms = c.ms;
                    let mut rec = self.record(step, None, StepStatus::Completed, &started, t);
                    fill(&mut rec, c);
                    let note = rec.low_confidence.then(|| "low confidence".to_string());
                    self.finish(rec, "step_completed", None, note, ms)
                }
                Err((e, ms)) => self.finish_failed(step, &started, t, e, ms),
            };
        };

        // Fan-out: one call per item, in parallel, gathered in order.
        let list = match template::eval_list(expr, &ctx) {
            Ok(l) => l,
            Err(e) => return self.finish_failed(step, &started, t, format!("`for_each`: {e}"), 0.0),
        };
        let total = list.len();
        self.report(Progress::StepStarted {
            step: step.id.clone(),
            what,
            items: Some(total),
        });
        self.store.event(
            "step_started",
            Some(&step.id),
            None,
            Some(format!("{total} items")),
        )?;
        let before = self.items.get(&step.id).cloned().unwrap_or_default();
        let mut outputs: Vec<Option<Value>> = vec![None; total];
        let mut confidences: Vec<Option<f64>> = vec![None; total];
        let mut finished = 0;
        let mut tasks: JoinSet<ItemResult> = JoinSet::new();
        for (index, item) in list.into_iter().enumerate() {
            if let Some(rec) = before.get(&index) {
                outputs[index] = rec.output.clone();
                confidences[index] = rec.confidence;
                finished += 1;
                continue;
            }
            let mut item_ctx = ctx.clone();
            item_ctx["item"] = item;
            item_ctx["index"] = json!(index);
            // Items start in order, as permits free up.
            let permit = tokio::select! {
                p = self.sem.clone().acquire_owned() => p.context("the executor stopped")?,
                () = self.cancel.cancelled() => break,
            };
            let e = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let step = &e.plan.steps[i];
                let started = now();
                let t = Instant::now();
                if let Err(se) = e.store.event("item_started", Some(&step.id), Some(index), None) {
                    return (index, Err((se.to_string(), 0.0)), 0.0);
                }
                match e.call(step, &item_ctx).await {
                    Ok(c) => {
                        let ms = c.ms;
                        let mut rec = e.record(step, Some(index), StepStatus::Completed, &started, t);
                        fill(&mut rec, c);
                        let stored = e
                            .store
                            .put_step(&rec, false)
                            .and_then(|()| e.store.event("item_completed", Some(&step.id), Some(index), None))
                            .and_then(|()| e.store.flush());
                        match stored {
                            Ok(()) => (index, Ok(rec), ms),
                            Err(se) => (index, Err((se.to_string(), ms)), ms),
                        }
                    }
                    Err((err, ms)) => (index, Err((err, ms)), ms),
                }
            });
        }
        self.report(Progress::ItemFinished {
            step: step.id.clone(),
            index: None,
            done: finished,
            total,
        });
        let mut ms_total = 0.0;
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let (index, result, ms) = joined.context("a fan-out task panicked")?;
            ms_total += ms;
            match result {
                Ok(rec) => {
                    outputs[index] = rec.output.clone();
                    confidences[index] = rec.confidence;
                    finished += 1;
                    self.report(Progress::ItemFinished {
                        step: step.id.clone(),
                        index: Some(index),
                        done: finished,
                        total,
                    });
                }
                Err((e, _)) => {
                    first_error.get_or_insert(format!("item {index}: {e}"));
                }
            }
        }
        if finished < total && first_error.is_none() {
            first_error = Some(if self.cancel.is_cancelled() {
                "cancelled".into()
            } else {
                format!("{} of {total} items did not finish", total - finished)
            });
        }
        if let Some(e) = first_error {
            return self.finish_failed(step, &started, t, e, ms_total);
        }
        let mut rec = self.record(step, None, StepStatus::Completed, &started, t);
        rec.output = Some(Value::Array(
            outputs.into_iter().map(|o| o.unwrap_or(Value::Null)).collect(),
        ));
        let known: Vec<f64> = confidences.iter().flatten().copied().collect();
        rec.confidence = (!known.is_empty()).then(|| known.iter().copied().fold(f64::INFINITY, f64::min));
        rec.attempts = 1;
        let note = Some(format!("{total} items"));
        self.finish(rec, "step_completed", note.clone(), note, ms_total)
    }

    /// Records a step's end durably (before any step that needs it
    /// starts), logs `kind`, reports it, and returns what later steps see.
    fn finish(
        &self,
        rec: StepRecord,
        kind: &str,
        detail: Option<String>,
        note: Option<String>,
        ms: f64,
    ) -> anyhow::Result<(Done, f64)> {
        self.store.put_step(&rec, false)?;
        self.store.event(kind, Some(&rec.step), None, detail)?;
        self.store.flush()?;
        self.report(Progress::StepFinished {
            step: rec.step.clone(),
            status: rec.status,
            duration_ms: rec.duration_ms.unwrap_or(0.0),
            confidence: rec.confidence,
            note,
        });
        Ok((
            Done {
                status: rec.status,
                view: view_of(&rec),
            },
            ms,
        ))
    }

    fn finish_failed(
        &self,
        step: &Step,
        started: &str,
        t: Instant,
        error: String,
        ms: f64,
    ) -> anyhow::Result<(Done, f64)> {
        let status = if self.cancel.is_cancelled() {
            StepStatus::Cancelled
        } else {
            StepStatus::Failed
        };
        let mut rec = self.record(step, None, status, started, t);
        rec.error = Some(error.clone());
        let kind = if status == StepStatus::Cancelled {
            "step_cancelled"
        } else {
            "step_failed"
        };
        self.finish(rec, kind, Some(error.clone()), Some(error), ms)
    }

    /// One call with the step's retries: the tool with its rendered
    /// arguments, or the prompt through the controller's cascade. Errors
    /// carry the time spent in calls.
    async fn call(&self, step: &Step, ctx: &Value) -> Result<Called, (String, f64)> {
        let mut pause = step.backoff;
        let mut last = String::new();
        let mut ms = 0.0;
        for attempt in 1..=step.attempts.max(1) {
            if self.cancel.is_cancelled() {
                return Err(("cancelled".into(), ms));
            }
            let t = Instant::now();
            let r = self.attempt(step, ctx).await;
            ms += t.elapsed().as_secs_f64() * 1000.0;
            match r {
                Ok(mut c) => {
                    c.attempts = attempt;
                    c.ms = ms;
                    return Ok(c);
                }
                Err(Failure::Final(e)) => return Err((e, ms)),
                Err(Failure::Retry(e)) => last = e,
            }
            if attempt < step.attempts {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = self.cancel.cancelled() => return Err(("cancelled".into(), ms)),
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
        Err((
            if step.attempts > 1 {
                format!("{last} (after {} attempts)", step.attempts)
            } else {
                last
            },
            ms,
        ))
    }

    async fn attempt(&self, step: &Step, ctx: &Value) -> Result<Called, Failure> {
        let options = CallOptions {
            timeout: step.timeout,
            // The step's own retries replace the agent's when it has them.
            attempts: (step.attempts > 1).then_some(1),
            progress: None,
            cancel: self.cancel.child_token(),
        };
        match &step.action {
            Action::Tool { agent, tool } => {
                let args =
                    template::render(&Value::Object(step.with.clone()), ctx).map_err(Failure::Final)?;
                let Value::Object(args) = args else {
                    return Err(Failure::Final("the arguments did not render to a mapping".into()));
                };
                let a = self
                    .controller
                    .registry
                    .get(agent)
                    .map_err(|e| Failure::Final(format!("{e:#}")))?;
                let out = dispatch::call(&a, tool, JsonObject::from_iter(args.clone()), &options)
                    .await
                    .map_err(|e| {
                        if options.cancel.is_cancelled() {
                            Failure::Final("cancelled".into())
                        } else {
                            Failure::Retry(e.to_string())
                        }
                    })?;
                if out.result.is_error == Some(true) {
                    return Err(Failure::Retry(format!(
                        "{agent}/{tool} returned an error: {}",
                        text_of(&out.result)
                    )));
                }
                let output = out.result.structured_content.clone().unwrap_or_else(|| {
                    let text = text_of(&out.result);
                    serde_json::from_str(&text).unwrap_or(Value::String(text))
                });
                let field = |k: &str| output.get(k).and_then(Value::as_str).map(str::to_string);
                let confidence = output.get("confidence").and_then(Value::as_f64);
                Ok(Called {
                    agent: Some(agent.clone()),
                    tool: Some(tool.clone()),
                    model: field("model"),
                    agent_version: field("agent_version"),
                    confidence,
                    low_confidence: matches!((confidence, step.min_confidence), (Some(c), Some(m)) if c < m),
                    escalations: Vec::new(),
                    input: Value::Object(args),
                    output,
                    attempts: 1,
                    ms: 0.0,
                })
            }
            Action::Ask { agent, prompt } => {
                let text = match template::render_str(prompt, ctx).map_err(Failure::Final)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let request = AskRequest {
                    text: text.clone(),
                    domain: agent.clone(),
                    min_confidence: step.min_confidence,
                    escalate: true,
                    max_tokens: step.max_tokens,
                    nearest: 0,
                };
                let outcome = self.controller.ask(&request, &options).await.map_err(|e| {
                    if options.cancel.is_cancelled() {
                        Failure::Final("cancelled".into())
                    } else {
                        Failure::Retry(format!("{e:#}"))
                    }
                })?;
                let escalations = outcome
                    .hops
                    .iter()
                    .filter(|h| h.stage != HopStage::Specialist)
                    .map(|h| {
                        format!(
                            "{}: {} ({})",
                            serde_json::to_value(h.stage)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default(),
                            h.agent,
                            h.outcome
                        )
                    })
                    .collect();
                Ok(Called {
                    output: json!({
                        "answer": outcome.answer,
                        "agent": outcome.agent,
                        "confidence": outcome.confidence,
                        "low_confidence": outcome.low_confidence,
                        "routed_to": outcome.route.agent,
                    }),
                    input: json!({ "prompt": text }),
                    agent: Some(outcome.agent.clone()),
                    tool: Some("ask".into()),
                    model: outcome.model.clone(),
                    agent_version: outcome.agent_version.clone(),
                    confidence: outcome.confidence,
                    escalations,
                    low_confidence: outcome.low_confidence,
                    attempts: 1,
                    ms: 0.0,
                })
            }
        }
    }
}

/// A fan-out item's index, its record or error, and its time in calls.
type ItemResult = (usize, Result<StepRecord, (String, f64)>, f64);

/// Why an attempt failed: worth another attempt, or not (a template that
/// does not render will not render next time either).
enum Failure {
    Retry(String),
    Final(String),
}

fn fill(rec: &mut StepRecord, c: Called) {
    rec.output = Some(c.output);
    rec.input = c.input;
    rec.agent = c.agent;
    rec.tool = c.tool;
    rec.model = c.model;
    rec.agent_version = c.agent_version;
    rec.confidence = c.confidence;
    rec.escalations = c.escalations;
    rec.low_confidence = c.low_confidence;
    rec.attempts = c.attempts;
}
