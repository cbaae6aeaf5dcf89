//! Durable workflow runs: one sled database per run under
//! `$TRIAGE_HOME/runs/ID/`, held by the process executing the run.
//!
//! A run database holds the run (spec text, inputs, status, outputs), a
//! record per step and per fan-out item (input, output, status, timings,
//! agent, model and version, confidence, escalations), and an append-only
//! event log. **Durability**: a step's (or item's) completion is flushed
//! to disk (sled `flush`, which fsyncs) before any step that needs it
//! starts, so a crash (`kill -9`, power loss) never loses a completed
//! step, and a resumed run never runs one again. What a crash can lose:
//! the events and partial state of steps still running at that moment;
//! those steps run again, from their start, on resume.
//!
//! `summary.json` beside the database mirrors the run's status (written
//! atomically at each change), so `triage runs list` can show runs that
//! another process is executing without waiting for its lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Held, StoreError, damaged, now, pid_alive};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
    /// Recorded as running, but no process holds it: killed or crashed.
    /// Resume it with `triage runs resume ID`.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// The run itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub id: String,
    pub workflow: String,
    pub version: String,
    /// The spec file it was started from.
    pub path: PathBuf,
    /// The spec text it runs (a resumed run uses this, not the file).
    pub source: String,
    pub inputs: Value,
    pub status: RunStatus,
    pub created_at: String,
    pub updated_at: String,
    /// How many times it was resumed.
    #[serde(default)]
    pub resumes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The process executing it, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// Where a step (or one fan-out item) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

/// One step, or one item of a fan-out step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: String,
    /// The fan-out item's index; none for the step as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub status: StepStatus,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    pub attempts: u32,
    /// The rendered arguments or prompt.
    #[serde(default)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The cascade's hops past the first answer (`samples`, `fallback`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<String>,
    #[serde(default)]
    pub low_confidence: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One entry of a run's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at: String,
    /// `run_started`, `run_resumed`, `step_started`, `step_completed`,
    /// `step_failed`, `step_skipped`, `item_completed`, `run_completed`,
    /// `run_failed`, `run_cancelled`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Problems with runs beyond the store's own.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("no run {id} in {dir} (list them with `triage runs list`)")]
    NotFound { id: String, dir: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The folder of all runs: `$TRIAGE_RUNS`, else `$TRIAGE_HOME/runs`.
pub fn runs_dir(home: &Path) -> PathBuf {
    std::env::var_os("TRIAGE_RUNS")
        .filter(|p| !p.is_empty())
        .map_or_else(|| home.join("runs"), PathBuf::from)
}

/// A new run id: the time it started, then random hex
/// (`20261129-101502-3fa9c2`), so ids sort by age.
pub fn new_run_id() -> String {
    let t = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let mut bytes = [0u8; 3];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
    bytes.copy_from_slice(&mix.to_le_bytes()[..3]);
    format!("{t}-{}", hex::encode(bytes))
}

/// A run's database, held open by this process.
#[derive(Debug)]
pub struct RunStore {
    dir: PathBuf,
    held: Held,
    steps: sled::Tree,
    events: sled::Tree,
    seq: AtomicU64,
}

impl RunStore {
    /// Creates the run `meta.id` under `runs`.
    pub fn create(runs: &Path, meta: &RunMeta) -> Result<RunStore, RunsError> {
        let dir = runs.join(&meta.id);
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = RunStore::hold(&dir, true)?;
        store.set_meta(meta)?;
        Ok(store)
    }

    /// Opens the run `id` to resume or change it. A run another process is
    /// executing is refused at once, naming that process.
    pub fn open(runs: &Path, id: &str) -> Result<RunStore, RunsError> {
        let dir = runs.join(id);
        if id.is_empty() || id.contains(['/', '\\']) || !dir.join("db").exists() {
            return Err(RunsError::NotFound {
                id: id.to_string(),
                dir: runs.to_path_buf(),
            });
        }
        Ok(RunStore::hold(&dir, false)?)
    }

    fn hold(dir: &Path, create: bool) -> Result<RunStore, StoreError> {
        // A run whose process is alive is refused at once; one whose
        // process just died may still be locked for a moment while the
        // kernel releases it.
        let owner = std::fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let alive = owner.split_whitespace().nth(1).is_some_and(pid_alive);
        let wait = if alive {
            Duration::ZERO
        } else {
            Duration::from_secs(10)
        };
        let held = Held::open(dir, wait, create)?;
        let tree = |name: &str| held.db.open_tree(name).map_err(|e| damaged(dir, e));
        let (steps, events) = (tree("steps")?, tree("events")?);
        let last = events.last().map_err(|e| damaged(dir, e))?.map_or(0, |(k, _)| {
            u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]))
        });
        Ok(RunStore {
            dir: dir.to_path_buf(),
            held,
            steps,
            events,
            seq: AtomicU64::new(last + 1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn err(&self, e: sled::Error) -> StoreError {
        damaged(&self.dir, e)
    }

    /// The run's record.
    pub fn meta(&self) -> Result<RunMeta, StoreError> {
        let raw = self
            .held
            .db
            .get("run")
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::Damaged {
                path: self.dir.clone(),
                reason: "the run record is missing".into(),
            })?;
        serde_json::from_slice(&raw).map_err(|e| StoreError::Damaged {
            path: self.dir.clone(),
            reason: format!("the run record cannot be read: {e}"),
        })
    }

    /// Replaces the run's record, durably, and mirrors it to
    /// `summary.json`.
    pub fn set_meta(&self, meta: &RunMeta) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(meta).expect("a run serialises");
        self.held.db.insert("run", bytes).map_err(|e| self.err(e))?;
        self.flush()?;
        let mut summary = serde_json::to_value(meta).expect("a run serialises");
        summary.as_object_mut().map(|o| o.remove("source"));
        let tmp = self.dir.join("summary.json.tmp");
        let io = |source| StoreError::Io {
            path: self.dir.clone(),
            source,
        };
        std::fs::write(&tmp, serde_json::to_vec_pretty(&summary).expect("json")).map_err(io)?;
        std::fs::rename(&tmp, self.dir.join("summary.json")).map_err(io)
    }

    fn step_key(step: &str, item: Option<usize>) -> Vec<u8> {
        let mut key = step.as_bytes().to_vec();
        if let Some(i) = item {
            key.push(0);
            key.extend_from_slice(&(i as u64).to_be_bytes());
        }
        key
    }

    /// Records a step or item; `durable` flushes it to disk before
    /// returning (for completions).
    pub fn put_step(&self, rec: &StepRecord, durable: bool) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(rec).expect("a step serialises");
        self.steps
            .insert(RunStore::step_key(&rec.step, rec.item), bytes)
            .map_err(|e| self.err(e))?;
        if durable {
            self.flush()?;
        }
        Ok(())
    }

    /// Every step and item record, in key order (a step before its items).
    pub fn steps(&self) -> Result<Vec<StepRecord>, StoreError> {
        self.read_all(&self.steps, "a step record")
    }

    /// Every value of `tree`, in key order, read as JSON.
    fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        tree.iter()
            .values()
            .map(|v| {
                let v = v.map_err(|e| self.err(e))?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Damaged {
                    path: self.dir.clone(),
                    reason: format!("{what} cannot be read: {e}"),
                })
            })
            .collect()
    }

    /// Appends to the event log (durable with the next flush).
    pub fn event(
        &self,
        kind: &str,
        step: Option<&str>,
        item: Option<usize>,
        detail: Option<String>,
    ) -> Result<(), StoreError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let e = Event {
            seq,
            at: now(),
            kind: kind.to_string(),
            step: step.map(str::to_string),
            item,
            detail,
        };
        self.events
            .insert(
                seq.to_be_bytes(),
                serde_json::to_vec(&e).expect("an event serialises"),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The event log, oldest first.
    pub fn events(&self) -> Result<Vec<Event>, StoreError> {
        self.read_all(&self.events, "an event")
    }

    /// Writes everything recorded so far to disk (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.held.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }
}

/// Runs this process is executing, by id: their stores are held here, so
/// reading one (`get_run`, a run resource) reads the live store instead of
/// being refused by the lock this process holds.
#[derive(Debug, Clone, Default)]
pub struct LiveRuns(Arc<Mutex<HashMap<String, Arc<RunStore>>>>);

impl LiveRuns {
    pub fn insert(&self, id: &str, store: Arc<RunStore>) {
        self.lock().insert(id.to_string(), store);
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Arc<RunStore>> {
        self.lock().get(id).cloned()
    }

    /// Ids of the runs in progress.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunStore>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A whole run as people and clients read it: the run (without its spec
/// text), every step and item record, and the event log.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// The run's record, as stored.
    #[serde(skip)]
    pub meta: RunMeta,
    /// The same without the spec text, as shown.
    pub run: Value,
    pub status: RunStatus,
    pub steps: Vec<StepRecord>,
    pub events: Vec<Event>,
}

impl RunView {
    fn of(store: &RunStore, live: bool) -> Result<RunView, StoreError> {
        let meta = store.meta()?;
        // Recorded as running but read from a closed store: nobody runs it.
        let status = match meta.status {
            RunStatus::Running if !live => RunStatus::Interrupted,
            s => s,
        };
        let mut run = serde_json::to_value(&meta).expect("a run serialises");
        run.as_object_mut().map(|o| o.remove("source"));
        Ok(RunView {
            meta,
            run,
            status,
            steps: store.steps()?,
            events: store.events()?,
        })
    }
}

/// Reads the run `id`: from `live` when this process is executing it,
/// else from its store. A run another process is executing is refused,
/// naming that process.
pub fn read_run(runs: &Path, id: &str, live: Option<&LiveRuns>) -> Result<RunView, RunsError> {
    if let Some(store) = live.and_then(|l| l.get(id)) {
        return Ok(RunView::of(&store, true)?);
    }
    let store = RunStore::open(runs, id)?;
    Ok(RunView::of(&store, false)?)
}

/// A run as `triage runs list` shows it, from its `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    #[serde(flatten)]
    pub meta: Value,
    pub status: RunStatus,
}

/// Every run under `runs`, newest first. A run recorded as running whose
/// process is gone is reported as interrupted.
pub fn list(runs: &Path) -> Vec<RunSummary> {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return Vec::new();
    };
    let mut out: Vec<RunSummary> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("summary.json")).ok()?;
            let meta: Value = serde_json::from_str(&text).ok()?;
            let mut status: RunStatus = serde_json::from_value(meta.get("status")?.clone()).ok()?;
            if status == RunStatus::Running {
                status = effective_status(&e.path(), meta.get("pid").and_then(Value::as_u64));
            }
            Some(RunSummary { meta, status })
        })
        .collect();
    out.sort_by(|a, b| b.meta["id"].as_str().cmp(&a.meta["id"].as_str()));
    out
}

/// A run recorded as running is interrupted unless its process is alive
/// and still holds it.
fn effective_status(dir: &Path, pid: Option<u64>) -> RunStatus {
    let holder = std::fs::read_to_string(dir.join("owner")).unwrap_or_default();
    let alive = pid.is_some_and(|p| pid_alive(&p.to_string()))
        && holder.split_whitespace().nth(1) == pid.map(|p| p.to_string()).as_deref();
    if alive {
        RunStatus::Running
    } else {
        RunStatus::Interrupted
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta(id: &str) -> RunMeta {
        RunMeta {
            id: id.into(),
            workflow: "w".into(),
            version: "1".into(),
            path: "w.yaml".into(),
            source: "name: w".into(),
            inputs: json!({}),
            status: RunStatus::Running,
            created_at: now(),
            updated_at: now(),
            resumes: 0,
            outputs: None,
            error: None,
            pid: Some(std::process::id()),
        }
    }

    fn step(step: &str, item: Option<usize>, output: Value) -> StepRecord {
        StepRecord {
            step: step.into(),
            item,
            status: StepStatus::Completed,
            started_at: now(),
            finished_at: Some(now()),
            duration_ms: Some(1.0),
            attempts: 1,
            input: json!({}),
            output: Some(output),
            agent: None,
            tool: None,
            model: None,
            agent_version: None,
            confidence: None,
            escalations: vec![],
            low_confidence: false,
            error: None,
        }
    }

    #[test]
    fn a_run_reopens_with_its_steps_and_events() {
        let tmp = tempfile::tempdir().unwrap();
        let id = new_run_id();
        {
            let store = RunStore::create(tmp.path(), &meta(&id)).unwrap();
            store.event("run_started", None, None, None).unwrap();
            store.put_step(&step("b", None, json!(2)), true).unwrap();
            store.put_step(&step("a", Some(1), json!("one")), true).unwrap();
            store.put_step(&step("a", Some(0), json!("zero")), true).unwrap();
            // Held: a second open is refused at once, naming us.
            let e = RunStore::open(tmp.path(), &id).unwrap_err().to_string();
            assert!(e.contains(&format!("process {}", std::process::id())), "{e}");
            assert_eq!(list(tmp.path())[0].status, RunStatus::Running);
        }
        let store = RunStore::open(tmp.path(), &id).unwrap();
        let steps: Vec<(String, Option<usize>)> = store
            .steps()
            .unwrap()
            .into_iter()
            .map(|s| (s.step, s.item))
            .collect();
        assert_eq!(
            steps,
            vec![("a".into(), Some(0)), ("a".into(), Some(1)), ("b".into(), None)]
        );
        store.event("run_resumed", None, None, None).unwrap();
        let kinds: Vec<String> = store.events().unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["run_started", "run_resumed"]);
        assert_eq!(store.meta().unwrap().id, id);
        drop(store);
        // Nobody holds it now, yet it says running: interrupted.
        assert_eq!(list(tmp.path())[0].status, RunStatus::Interrupted);
    }

    #[test]
    fn unknown_runs_and_other_versions_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let e = RunStore::open(tmp.path(), "nope").unwrap_err().to_string();
        assert!(e.contains("no run nope"), "{e}");
        let id = new_run_id();
        drop(RunStore::create(tmp.path(), &meta(&id)).unwrap());
        {
            let db = sled::open(tmp.path().join(&id)).unwrap();
            db.insert("schema_version", "99").unwrap();
            db.flush().unwrap();
        }
        let e = RunStore::open(tmp.path(), &id).unwrap_err().to_string();
        assert!(
            e.contains("schema version 99") && e.contains("left unchanged"),
            "{e}"
        );
    }
}
