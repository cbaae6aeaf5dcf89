//! The controller's store: routing decisions, calls to agents and whole
//! `ask` records, in sled under `$TRIAGE_HOME/store`.
//!
//! sled locks its files for one process at a time, and users run `triage
//! ask` in one terminal while `triage serve` runs in another. So nobody
//! keeps the store open: each write or read opens it, does its work,
//! flushes and closes it, which takes milliseconds. A process that finds it
//! locked waits (backing off) for up to the configured wait, then fails with
//! a message naming the process that holds it (recorded in
//! `store/owner` while it is open). The store records its schema version; a
//! store of another version or a damaged one is refused with a clear error
//! and left as it is.
//!
//! [`Store`] is the trait the controller writes through, so another
//! backend can replace sled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::router::RouteDecision;

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {path} is in use by {holder} and stayed locked for {waited:?}; \
         try again when it finishes, or raise TRIAGE_STORE_WAIT_MS"
    )]
    Busy {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error(
        "the store at {path} has schema version {found}, and this triage reads version {SCHEMA_VERSION}; \
         it was left unchanged (use a matching triage, or set TRIAGE_HOME to another folder)"
    )]
    Version { path: PathBuf, found: String },
    #[error(
        "the store at {path} cannot be opened ({reason}); it was left unchanged \
         (move it aside to start a fresh one)"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("store at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One call to an agent's tool, successful or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// RFC 3339 time the call started.
    pub at: String,
    pub agent: String,
    pub tool: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: f64,
    /// Attempts made (1 when it succeeded first time).
    pub attempts: u32,
    /// Generated tokens, when the tool reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Whether the answer was escalated past this agent.
    #[serde(default)]
    pub escalated: bool,
}

/// A routing decision and the task it was for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteRecord {
    pub at: String,
    /// The task (its first 2,000 characters).
    pub task: String,
    pub decision: RouteDecision,
}

/// Per-agent figures computed from the recorded calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    pub calls: u64,
    pub errors: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub tokens: u64,
    pub escalations: u64,
}

/// Where the controller keeps its records.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Appends a routing decision.
    fn record_route(&self, route: &RouteRecord) -> Result<(), StoreError>;
    /// Appends calls (one write for the batch).
    fn record_calls(&self, calls: &[CallRecord]) -> Result<(), StoreError>;
    /// Appends an arbitrary JSON record to a named log (`asks`, ...).
    fn record(&self, log: &str, value: &serde_json::Value) -> Result<(), StoreError>;
    /// The last `limit` routing decisions, oldest first.
    fn routes(&self, limit: usize) -> Result<Vec<RouteRecord>, StoreError>;
    /// The last `limit` records of a named log, oldest first.
    fn records(&self, log: &str, limit: usize) -> Result<Vec<serde_json::Value>, StoreError>;
    /// Figures per agent over every recorded call.
    fn agent_stats(&self) -> Result<BTreeMap<String, AgentStats>, StoreError>;
}

/// The sled store, opened for each operation.
#[derive(Debug)]
pub struct SledStore {
    path: PathBuf,
    wait: Duration,
    /// One open at a time within this process (sled's lock is per file).
    local: Mutex<()>,
}

impl SledStore {
    /// The store in `path` (created on first write); a locked store is
    /// waited for up to `wait`.
    pub fn new(path: impl Into<PathBuf>, wait: Duration) -> SledStore {
        SledStore {
            path: path.into(),
            wait,
            local: Mutex::new(()),
        }
    }

    /// `$TRIAGE_STORE`, else `$TRIAGE_HOME/store`, waiting
    /// `TRIAGE_STORE_WAIT_MS` (default 10 s) for a store another process
    /// holds.
    pub fn at_home(home: &Path) -> SledStore {
        let wait = std::env::var("TRIAGE_STORE_WAIT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        let path = std::env::var_os("TRIAGE_STORE")
            .filter(|p| !p.is_empty())
            .map_or_else(|| home.join("store"), PathBuf::from);
        SledStore::new(path, wait)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the store, runs `f`, flushes and closes it.
    fn with_db<R>(&self, write: bool, f: impl FnOnce(&sled::Db) -> sled::Result<R>) -> Result<R, StoreError> {
        let _local = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !write && !self.path.join("db").exists() {
            // Reading a store nobody wrote yet: answer from an empty
            // temporary one instead of creating files on a read.
            let db = sled::Config::new()
                .temporary(true)
                .open()
                .map_err(|e| damaged(&self.path, e))?;
            return f(&db).map_err(|e| damaged(&self.path, e));
        }
        let held = Held::open(&self.path, self.wait, write)?;
        let result = f(&held.db).map_err(|e| damaged(&self.path, e));
        let flushed = if write {
            held.db.flush().map(|_| ())
        } else {
            Ok(())
        };
        drop(held);
        let r = result?;
        flushed.map_err(|e| damaged(&self.path, e))?;
        Ok(r)
    }

    fn append<T: Serialize>(&self, tree: &str, items: &[T]) -> Result<(), StoreError> {
        let values: Vec<Vec<u8>> = items
            .iter()
            .map(|i| serde_json::to_vec(i).expect("records serialise"))
            .collect();
        self.with_db(true, |db| {
            let tree = db.open_tree(tree)?;
            for v in values {
                let id = db.generate_id()?;
                tree.insert(id.to_be_bytes(), v)?;
            }
            Ok(())
        })
    }

    fn last<T: DeserializeOwned>(&self, tree: &str, limit: usize) -> Result<Vec<T>, StoreError> {
        let raw: Vec<sled::IVec> = self.with_db(false, |db| {
            let tree = db.open_tree(tree)?;
            let mut items: Vec<sled::IVec> = tree
                .iter()
                .values()
                .rev()
                .take(limit)
                .collect::<sled::Result<_>>()?;
            items.reverse();
            Ok(items)
        })?;
        Ok(raw
            .iter()
            .filter_map(|v| match serde_json::from_slice(v) {
                Ok(item) => Some(item),
                Err(e) => {
                    tracing::warn!("skipping an unreadable record in {tree}: {e}");
                    None
                }
            })
            .collect())
    }
}

/// A sled database this process holds open, its `owner` file naming the
/// process until it is dropped. Shared by the controller's store (held for
/// one operation) and workflow runs (held while the run executes).
#[derive(Debug)]
pub struct Held {
    pub db: sled::Db,
    owner: PathBuf,
}

impl Held {
    /// Opens the database in `path`, waiting up to `wait` while another
    /// process holds it, then failing with a message naming that process.
    /// A database of another schema version, or a damaged one, is refused
    /// and left unchanged. `write` creates the version mark in a new one.
    pub fn open(path: &Path, wait: Duration, write: bool) -> Result<Held, StoreError> {
        // sled rewrites a folder it does not recognise as a fresh database;
        // refuse anything that is not one before it gets the chance.
        if path.join("db").exists() {
            looks_like_sled(path)?;
        }
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) => {
                    if start.elapsed() >= wait {
                        return Err(StoreError::Busy {
                            path: path.to_path_buf(),
                            holder: holder(path),
                            waited: start.elapsed(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(damaged(path, e)),
            }
        };
        let owner = path.join("owner");
        let _ = std::fs::write(&owner, owner_line());
        let held = Held { db, owner };
        check_version(path, &held.db, write)?;
        Ok(held)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.owner);
    }
}

/// Whether an existing store folder holds a sled database: its `conf`
/// must be sled's configuration.
fn looks_like_sled(path: &Path) -> Result<(), StoreError> {
    let damaged = |reason: &str| StoreError::Damaged {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let conf =
        std::fs::read(path.join("conf")).map_err(|_| damaged("it has a `db` file but no sled `conf`"))?;
    let text = String::from_utf8_lossy(&conf);
    if !text.starts_with("segment_size:") || !text.contains("\nversion: ") {
        return Err(damaged("its `conf` is not a sled configuration"));
    }
    Ok(())
}

fn check_version(path: &Path, db: &sled::Db, write: bool) -> Result<(), StoreError> {
    match db.get("schema_version").map_err(|e| damaged(path, e))? {
        Some(v) if v.as_ref() == SCHEMA_VERSION.to_string().as_bytes() => Ok(()),
        Some(v) => Err(StoreError::Version {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(&v).into_owned(),
        }),
        None if db.is_empty() || !write => {
            if write {
                db.insert("schema_version", SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(|e| damaged(path, e))?;
            }
            Ok(())
        }
        None => Err(StoreError::Version {
            path: path.to_path_buf(),
            found: "none (not a triage store?)".into(),
        }),
    }
}

/// A sled error as the store's error.
pub fn damaged(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(source) => StoreError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => StoreError::Damaged {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Who holds the database in `path`, from the owner file the holder
/// wrote.
pub fn holder(path: &Path) -> String {
    match std::fs::read_to_string(path.join("owner")) {
        Ok(line) if !line.trim().is_empty() => {
            let pid = line.split_whitespace().nth(1).unwrap_or("");
            if pid_alive(pid) {
                line.trim().to_string()
            } else {
                format!("another process (last recorded holder: {})", line.trim())
            }
        }
        _ => "another process".into(),
    }
}

/// Whether process `pid` is running (always true where /proc is missing).
pub fn pid_alive(pid: &str) -> bool {
    !pid.is_empty() && Path::new("/proc").join(pid).exists() || !Path::new("/proc/self").exists()
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// `process PID (COMMAND LINE)`.
fn owner_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let program = args
        .first()
        .and_then(|p| Path::new(p).file_name())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default().join(" ");
    format!("process {} ({program} {rest})", std::process::id())
}

impl Store for SledStore {
    fn record_route(&self, route: &RouteRecord) -> Result<(), StoreError> {
        self.append("routes", std::slice::from_ref(route))
    }

    fn record_calls(&self, calls: &[CallRecord]) -> Result<(), StoreError> {
        if calls.is_empty() {
            return Ok(());
        }
        self.append("calls", calls)
    }

    fn record(&self, log: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        self.append(&format!("log:{log}"), std::slice::from_ref(value))
    }

    fn routes(&self, limit: usize) -> Result<Vec<RouteRecord>, StoreError> {
        self.last("routes", limit)
    }

    fn records(&self, log: &str, limit: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        self.last(&format!("log:{log}"), limit)
    }

    fn agent_stats(&self) -> Result<BTreeMap<String, AgentStats>, StoreError> {
        let calls: Vec<CallRecord> = self.last("calls", usize::MAX)?;
        Ok(stats(&calls))
    }
}

/// Figures per agent from a list of calls.
pub fn stats(calls: &[CallRecord]) -> BTreeMap<String, AgentStats> {
    let mut by_agent: BTreeMap<String, Vec<&CallRecord>> = BTreeMap::new();
    for c in calls {
        by_agent.entry(c.agent.clone()).or_default().push(c);
    }
    by_agent
        .into_iter()
        .map(|(agent, calls)| {
            let mut latencies: Vec<f64> = calls.iter().filter(|c| c.ok).map(|c| c.latency_ms).collect();
            latencies.sort_by(f64::total_cmp);
            let pick = |q: f64| crate::percentile(&latencies, q);
            let s = AgentStats {
                calls: calls.len() as u64,
                errors: calls.iter().filter(|c| !c.ok).count() as u64,
                latency_ms_p50: pick(0.5),
                latency_ms_p95: pick(0.95),
                tokens: calls.iter().filter_map(|c| c.tokens).sum(),
                escalations: calls.iter().filter(|c| c.escalated).count() as u64,
            };
            (agent, s)
        })
        .collect()
}

/// The current time in RFC 3339, for records.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(agent: &str, ok: bool, ms: f64) -> CallRecord {
        CallRecord {
            at: now(),
            agent: agent.into(),
            tool: "ask".into(),
            ok,
            error: (!ok).then(|| "boom".into()),
            latency_ms: ms,
            attempts: 1,
            tokens: Some(10),
            confidence: Some(0.5),
            escalated: !ok,
        }
    }

    #[test]
    fn records_survive_reopening_and_stats_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::new(dir.path().join("store"), Duration::from_secs(1));
        assert!(store.agent_stats().unwrap().is_empty(), "reading creates nothing");
        assert!(!dir.path().join("store").exists());
        store
            .record_calls(&[
                call("legal", true, 10.0),
                call("legal", true, 30.0),
                call("code", false, 5.0),
            ])
            .unwrap();
        store.record("asks", &serde_json::json!({ "n": 1 })).unwrap();
        let again = SledStore::new(dir.path().join("store"), Duration::from_secs(1));
        let stats = again.agent_stats().unwrap();
        assert_eq!(stats["legal"].calls, 2);
        assert_eq!(stats["legal"].latency_ms_p50, 30.0);
        assert_eq!(stats["legal"].tokens, 20);
        assert_eq!(stats["code"].errors, 1);
        assert_eq!(stats["code"].escalations, 1);
        assert_eq!(
            again.records("asks", 10).unwrap(),
            [serde_json::json!({ "n": 1 })]
        );
        assert!(!dir.path().join("store/owner").exists(), "closed after use");
    }

    #[test]
    fn another_schema_version_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let db = sled::open(&path).unwrap();
            db.insert("schema_version", "99").unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::new(&path, Duration::from_secs(1));
        let err = store.record_calls(&[call("legal", true, 1.0)]).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
        let db = sled::open(&path).unwrap();
        assert_eq!(db.get("schema_version").unwrap().unwrap().as_ref(), b"99");
        assert!(db.open_tree("calls").unwrap().is_empty(), "nothing written");
    }
}
