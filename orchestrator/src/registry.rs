//! The registry: the agents the controller can call, where each runs, and
//! the live MCP connection to each.
//!
//! Entries come from `specs/registry.toml` plus an optional user file.
//! Stdio agents are spawned on first use and kept connected; when one dies
//! the next call starts it again, after a pause that doubles with each
//! failure in a row (up to 5 s). HTTP agents may list several URLs
//! (replicas), tried in turn. [`Registry::shutdown`] closes every
//! connection, which ends the child processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rmcp::handler::client::progress::ProgressDispatcher;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientRequest, Implementation, ProgressNotificationParam,
    RequestNoParam,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use triage_agents::AgentSpec;

const BUILTIN: &str = include_str!("../../specs/registry.toml");

/// A registry file: `specs/registry.toml` or a user's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    #[serde(default, rename = "agent")]
    pub agents: Vec<AgentEntry>,
    #[serde(default)]
    pub cascade: Option<CascadeConfig>,
}

/// One agent: a name, where it runs, and the specialist spec it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The specialist spec (specs/agents/NAME.toml) this agent serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// Program and arguments of a stdio MCP server; `{triage}` is this
    /// binary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Extra environment for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working folder for the command; a relative one is relative to the
    /// registry file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Streamable-HTTP endpoints, tried in turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub url: Vec<String>,
    /// Time allowed for one call, in milliseconds (default 120,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts for a call that fails in a way a retry can fix (default 3).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_timeout_ms() -> u64 {
    120_000
}

fn default_attempts() -> u32 {
    3
}

/// What the controller does with a low-confidence answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    /// Seeded samples drawn from the small model before escalating (0 to
    /// skip this stage).
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// The agent that takes what the small models cannot answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackConfig>,
}

fn default_samples() -> usize {
    4
}

fn default_temperature() -> f64 {
    0.7
}

impl Default for CascadeConfig {
    fn default() -> CascadeConfig {
        CascadeConfig {
            samples: default_samples(),
            temperature: default_temperature(),
            fallback: None,
        }
    }
}

/// The fallback agent and how to call it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    pub agent: String,
    #[serde(default = "default_tool")]
    pub tool: String,
    /// The tool argument that receives the task.
    #[serde(default = "default_argument")]
    pub argument: String,
}

fn default_tool() -> String {
    "ask".into()
}

fn default_argument() -> String {
    "question".into()
}

impl RegistryFile {
    /// Parses a registry file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<RegistryFile> {
        let file: RegistryFile = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let (line, column) = triage_agents::line_col(text, s.start);
                    format!(":{line}:{column}")
                })
                .unwrap_or_default();
            anyhow::anyhow!("{}{at}: {}", path.display(), e.message())
        })?;
        for a in &file.agents {
            let problem = match (a.command.is_empty(), a.url.is_empty()) {
                (true, true) => Some("needs either `command` (a stdio server) or `url` (streamable HTTP)"),
                (false, false) => Some("has both `command` and `url`; give one"),
                _ => None,
            };
            if let Some(p) = problem {
                bail!("{}: agent `{}` {p}", path.display(), a.name);
            }
            if a.attempts == 0 || a.timeout_ms == 0 {
                bail!(
                    "{}: agent `{}`: attempts and timeout_ms must be at least 1",
                    path.display(),
                    a.name
                );
            }
            if let Some(u) = a
                .url
                .iter()
                .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
            {
                bail!(
                    "{}: agent `{}`: `{u}` is not an http:// or https:// URL",
                    path.display(),
                    a.name
                );
            }
        }
        Ok(file)
    }

    /// The shipped `specs/registry.toml`.
    pub fn builtin() -> RegistryFile {
        RegistryFile::parse(BUILTIN, Path::new("specs/registry.toml")).expect("the shipped registry is valid")
    }
}

/// The user registry to merge: `explicit`, else `$TRIAGE_HOME/registry.toml`
/// when it exists.
pub fn user_registry_path(explicit: Option<&Path>, home: &Path) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| Some(home.join("registry.toml")).filter(|p| p.exists()))
}

/// Progress notifications from agents, delivered to whoever subscribed to
/// the request's progress token.
#[derive(Debug, Clone, Default)]
pub struct ControllerClient {
    pub progress: ProgressDispatcher,
}

impl ClientHandler for ControllerClient {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.handle_notification(params).await;
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("triage-controller", env!("CARGO_PKG_VERSION")),
        )
    }
}

type Client = RunningService<RoleClient, ControllerClient>;

/// One registered agent and its connection.
#[derive(Debug)]
pub struct Agent {
    pub entry: AgentEntry,
    /// The specialist spec, for our own agents.
    pub spec: Option<AgentSpec>,
    state: Mutex<State>,
    handler: ControllerClient,
    starts: AtomicU32,
}

#[derive(Debug, Default)]
struct State {
    client: Option<Client>,
    pid: Option<u32>,
    /// Failed connects (or deaths) in a row, for the backoff.
    failures: u32,
    last_failure: Option<Instant>,
    /// The next URL to try.
    url_index: usize,
}

/// A live connection: the peer to send requests on, and what it runs as.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: rmcp::Peer<RoleClient>,
    pub progress: ProgressDispatcher,
    /// The child's process id, for stdio agents.
    pub pid: Option<u32>,
}

impl Agent {
    fn new(entry: AgentEntry, spec: Option<AgentSpec>) -> Agent {
        Agent {
            entry,
            spec,
            state: Mutex::new(State::default()),
            handler: ControllerClient::default(),
            starts: AtomicU32::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.entry.name
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.entry.timeout_ms)
    }

    /// Where it runs, for people.
    pub fn location(&self) -> String {
        if self.entry.command.is_empty() {
            self.entry.url.join(", ")
        } else {
            format!("stdio: {}", self.entry.command.join(" "))
        }
    }

    /// How many times it was started (or connected).
    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::Relaxed)
    }

    /// The connection, started or reconnected first if needed.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let mut state = self.state.lock().await;
        if let Some(c) = &state.client {
            if !c.is_closed() && !c.peer().is_transport_closed() {
                return Ok(Connection {
                    peer: c.peer().clone(),
                    progress: self.handler.progress.clone(),
                    pid: state.pid,
                });
            }
            state.client = None;
            state.failures += 1;
            state.last_failure = Some(Instant::now());
            tracing::warn!("agent {} is gone; starting it again", self.entry.name);
        }
        if state.failures > 0 {
            let pause =
                Duration::from_millis(100 * (1u64 << state.failures.min(6))).min(Duration::from_secs(5));
            if let Some(since) = state.last_failure.map(|t| t.elapsed())
                && since < pause
            {
                tokio::time::sleep(pause - since).await;
            }
        }
        match self.start(&mut state).await {
            Ok(client) => {
                self.starts.fetch_add(1, Ordering::Relaxed);
                let conn = Connection {
                    peer: client.peer().clone(),
                    progress: self.handler.progress.clone(),
                    pid: state.pid,
                };
                state.client = Some(client);
                state.failures = 0;
                Ok(conn)
            }
            Err(e) => {
                state.failures += 1;
                state.last_failure = Some(Instant::now());
                Err(e)
            }
        }
    }

    async fn start(&self, state: &mut State) -> anyhow::Result<Client> {
        let name = &self.entry.name;
        if let Some(program) = self.entry.command.first() {
            let program = if program == "{triage}" {
                std::env::current_exe().context("cannot find the triage binary")?
            } else {
                PathBuf::from(program)
            };
            let args = self.entry.command[1..].to_vec();
            let env = self.entry.env.clone();
            let cwd = self.entry.cwd.clone();
            let cmd = tokio::process::Command::new(&program).configure(|c| {
                c.args(&args).envs(&env);
                if let Some(dir) = &cwd {
                    c.current_dir(dir);
                }
            });
            let transport = TokioChildProcess::new(cmd)
                .with_context(|| format!("cannot start agent `{name}` ({})", program.display()))?;
            state.pid = transport.id();
            let client =
                self.handler.clone().serve(transport).await.with_context(|| {
                    format!("agent `{name}` started but did not complete the MCP handshake")
                })?;
            return Ok(client);
        }
        let mut last = None;
        for i in 0..self.entry.url.len() {
            let at = (state.url_index + i) % self.entry.url.len();
            let url = &self.entry.url[at];
            let transport = StreamableHttpClientTransport::from_uri(url.clone());
            match self.handler.clone().serve(transport).await {
                Ok(client) => {
                    state.url_index = at;
                    state.pid = None;
                    return Ok(client);
                }
                Err(e) => {
                    tracing::warn!("agent {name} at {url}: {e}");
                    last = Some(anyhow::anyhow!("cannot connect to agent `{name}` at {url}: {e}"));
                }
            }
        }
        state.url_index = (state.url_index + 1) % self.entry.url.len().max(1);
        Err(last.unwrap_or_else(|| anyhow::anyhow!("agent `{name}` has no URL")))
    }

    /// Marks the connection dead (the call saw it close), so the next
    /// [`Agent::connect`] starts it again; HTTP agents move to the next URL.
    pub async fn disconnect(&self) {
        let mut state = self.state.lock().await;
        if let Some(c) = state.client.take() {
            let _ = c.cancel().await;
            state.failures += 1;
            state.last_failure = Some(Instant::now());
            if !self.entry.url.is_empty() {
                state.url_index = (state.url_index + 1) % self.entry.url.len();
            }
        }
    }

    /// Whether a connection is open now (without starting one).
    pub async fn is_connected(&self) -> bool {
        let state = self.state.lock().await;
        state.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// The child's process id, if it runs as one.
    pub async fn pid(&self) -> Option<u32> {
        self.state.lock().await.pid
    }

    /// MCP ping: the round-trip time.
    pub async fn ping(&self) -> anyhow::Result<Duration> {
        let conn = self.connect().await?;
        let start = Instant::now();
        let ping = ClientRequest::PingRequest(RequestNoParam {
            method: Default::default(),
            extensions: Default::default(),
        });
        tokio::time::timeout(Duration::from_secs(10), conn.peer.send_request(ping))
            .await
            .map_err(|_| anyhow::anyhow!("agent `{}` did not answer a ping within 10 s", self.entry.name))?
            .with_context(|| format!("agent `{}` did not answer a ping", self.entry.name))?;
        Ok(start.elapsed())
    }

    /// The server's name and version from its handshake.
    pub async fn server_info(&self) -> Option<(String, String)> {
        let state = self.state.lock().await;
        let info = state.client.as_ref()?.peer_info()?;
        let server = info.server_info.as_ref()?;
        Some((server.name.clone(), server.version.clone()))
    }

    async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        if let Some(c) = state.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.cancel()).await;
        }
    }
}

/// Every registered agent.
#[derive(Debug)]
pub struct Registry {
    agents: BTreeMap<String, Arc<Agent>>,
    order: Vec<String>,
    pub cascade: CascadeConfig,
}

impl Registry {
    /// The built-in registry, with `user` merged over it (same names
    /// replace); `specs` are the specialist specs the entries name.
    pub fn new(user: Option<(&Path, RegistryFile)>, specs: &[AgentSpec]) -> anyhow::Result<Registry> {
        let builtin = RegistryFile::builtin();
        let mut entries = builtin.agents;
        let mut cascade = builtin.cascade.unwrap_or_default();
        let mut source = Path::new("specs/registry.toml").to_path_buf();
        if let Some((path, file)) = user {
            source = path.to_path_buf();
            let mut seen = std::collections::BTreeSet::new();
            let base = path.parent().unwrap_or(Path::new("."));
            for mut a in file.agents {
                if let Some(cwd) = &a.cwd {
                    a.cwd = Some(base.join(cwd));
                }
                if !seen.insert(a.name.clone()) {
                    bail!("{}: agent `{}` is listed twice", path.display(), a.name);
                }
                match entries.iter_mut().find(|e| e.name == a.name) {
                    Some(e) => *e = a,
                    None => entries.push(a),
                }
            }
            if let Some(c) = file.cascade {
                cascade = c;
            }
        }
        let mut agents = BTreeMap::new();
        let mut order = Vec::new();
        for e in entries {
            let spec = match &e.spec {
                Some(s) => Some(specs.iter().find(|x| &x.name == s).cloned().with_context(|| {
                    let known: Vec<&str> = specs.iter().map(|x| x.name.as_str()).collect();
                    format!(
                        "{}: agent `{}` names the spec `{s}`, which does not exist; the specs are: {}",
                        source.display(),
                        e.name,
                        known.join(", ")
                    )
                })?),
                None => None,
            };
            order.push(e.name.clone());
            agents.insert(e.name.clone(), Arc::new(Agent::new(e, spec)));
        }
        if let Some(f) = &cascade.fallback
            && !agents.contains_key(&f.agent)
        {
            bail!(
                "{}: the cascade's fallback `{}` is not a registered agent; the agents are: {}",
                source.display(),
                f.agent,
                order.join(", ")
            );
        }
        Ok(Registry {
            agents,
            order,
            cascade,
        })
    }

    /// Reads the user registry at `path` and builds the registry.
    pub fn load(path: Option<&Path>, specs: &[AgentSpec]) -> anyhow::Result<Registry> {
        let user = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the registry {}", p.display()))?;
                Some((p, RegistryFile::parse(&text, p)?))
            }
            None => None,
        };
        Registry::new(user, specs)
    }

    /// The agent called `name`.
    pub fn get(&self, name: &str) -> anyhow::Result<Arc<Agent>> {
        self.agents.get(name).cloned().with_context(|| {
            format!(
                "no agent called `{name}` is registered; the agents are: {}",
                self.order.join(", ")
            )
        })
    }

    /// The agent serving the specialist `spec`.
    pub fn for_spec(&self, spec: &str) -> anyhow::Result<Arc<Agent>> {
        self.agents
            .values()
            .find(|a| a.spec.as_ref().is_some_and(|s| s.name == spec))
            .cloned()
            .with_context(|| format!("no registered agent serves the specialist `{spec}`"))
    }

    /// Every agent, in registry order.
    pub fn agents(&self) -> impl Iterator<Item = &Arc<Agent>> {
        self.order.iter().map(|n| &self.agents[n])
    }

    /// Closes every connection; stdio agents exit.
    pub async fn shutdown(&self) {
        for a in self.agents.values() {
            a.shutdown().await;
        }
    }
}
