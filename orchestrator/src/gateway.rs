//! The gateway: the whole team as one MCP server, over stdio or
//! streamable HTTP (see [`http`]).
//!
//! It serves
//! - **tools**: `ask` (routed, cascaded, with progress while the specialist
//!   generates, cancellable), `route`, `run_workflow` (progress per step,
//!   cancellable), `get_run`, `list_agents`, and every specialist tool
//!   under `AGENT_TOOL` (`legal_classify_clauses`), its input and output
//!   schemas passed through and the call forwarded over MCP;
//! - **resources**: each run (`triage://runs/{id}`, also as a template),
//!   each specialist's model card, each workflow spec; clients are told
//!   when the list changes (a run starts or ends);
//! - **prompts**: one per workflow, taking its inputs as arguments.
//!
//! Every client session shares one controller (one connection to each
//! specialist, one copy of each model); each session has its own cap on
//! calls in flight. A call that fails inside a specialist comes back as a
//! tool error that says why, and the gateway goes on serving.

// Logging (`logging/setLevel`, `notifications/message`) is part of the
// 2025-11-25 revision this gateway serves; rmcp marks it deprecated for
// the revision after.
#![allow(deprecated)]

pub mod http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    CompletionInfo, ContentBlock, GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation,
    JsonObject, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam, Prompt,
    PromptArgument, PromptMessage, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Reference, Resource, ResourceContents, ResourceTemplate,
    ResourceUpdatedNotificationParam, Role, ServerCapabilities, ServerConfig, SetLevelRequestParams,
    SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};
use triage_agents::{ModelCard, SpecialistServer};
use triage_models::MINILM;

use crate::controller::{AskOutcome, AskRequest, Controller};
use crate::dispatch::{self, CallOptions};
use crate::router::RouteDecision;
use crate::workflow::exec::{self, Progress, RunOptions};
use crate::workflow::library::{self, Entry};
use crate::workflow::runs::{self, LiveRuns, RunStatus};
use crate::workflow::{Agents, Plan};

/// The longest name MCP clients accept for a tool.
const MAX_TOOL_NAME: usize = 64;

/// What the gateway serves and how it limits clients.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Folder of workflow specs instead of the shipped ones.
    pub workflows: Option<PathBuf>,
    /// The only tools clients may list and call: names, or prefixes
    /// ending in `*` (`legal_*`). All tools when `None`.
    pub allow_tools: Option<Vec<String>>,
    /// Calls in flight per client session; more are refused until one
    /// finishes.
    pub max_calls: usize,
    /// Where workflow runs are stored.
    pub runs: PathBuf,
}

/// A specialist tool as the gateway lists it.
#[derive(Debug, Clone)]
struct Forwarded {
    agent: String,
    tool: String,
    def: Tool,
}

/// A session subscribed to a resource: its number and its peer.
type Subscriber = (u64, Peer<RoleServer>);

/// What every session shares.
#[derive(Debug)]
struct Shared {
    controller: Arc<Controller>,
    options: GatewayOptions,
    forwarded: BTreeMap<String, Forwarded>,
    workflows: Vec<Entry>,
    agents: Agents,
    cards: BTreeMap<String, ModelCard>,
    live: LiveRuns,
    /// Sessions to tell when the resource list changes.
    peers: Mutex<Vec<Peer<RoleServer>>>,
    /// Sessions subscribed to a run's resource, by URI.
    subscribers: Mutex<BTreeMap<String, Vec<Subscriber>>>,
    /// The last session number given out.
    sessions: std::sync::atomic::AtomicU64,
}

/// One client session of the gateway (clone it per session with
/// [`Gateway::session`]).
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    /// This session's number (subscriptions are kept by it).
    session: u64,
    calls: Arc<Semaphore>,
    log_level: Arc<Mutex<Option<LoggingLevel>>>,
    tool_router: ToolRouter<Gateway>,
}

/// Input of `ask`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct AskParams {
    /// The task or question, in plain language.
    pub task: String,
    /// Send it to this specialist instead of routing it (see
    /// `list_agents`).
    #[serde(default)]
    pub domain: Option<String>,
    /// Hold the answer to this confidence (0 to 1) instead of the
    /// specialist's threshold.
    #[serde(default)]
    pub min_confidence: Option<f64>,
    /// Let the cascade spend more compute on, or pass on, an answer below
    /// the threshold (default true).
    #[serde(default)]
    pub escalate: Option<bool>,
    /// Longest answer, in tokens.
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

/// Input of `route`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct RouteParams {
    /// The task to classify.
    pub task: String,
    /// Nearest example requests to show per candidate (default 2).
    #[serde(default)]
    pub nearest: Option<usize>,
}

/// Input of `run_workflow`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct RunWorkflowParams {
    /// A workflow by name (see the `triage://workflows/...` resources), or
    /// leave it out and give `spec`.
    #[serde(default)]
    pub workflow: Option<String>,
    /// A whole workflow spec, as YAML text, instead of a name.
    #[serde(default)]
    pub spec: Option<String>,
    /// The workflow's inputs, by name.
    #[serde(default)]
    pub inputs: Map<String, Value>,
}

/// How a workflow run ended.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct RunResult {
    pub run_id: String,
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The workflow's outputs, when it completed.
    pub outputs: Option<Value>,
    pub error: Option<String>,
    /// The run's resource, with every step's input, output and timing.
    pub resource: String,
    pub steps_run: usize,
    pub wall_ms: f64,
}

/// Input of `get_run`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct GetRunParams {
    /// The run id `run_workflow` returned.
    pub id: String,
}

/// A run: its record, steps and events.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct RunReport {
    /// The run's record: workflow, version, inputs, status, outputs, times.
    pub run: Value,
    /// `running`, `completed`, `failed`, `cancelled` or `interrupted`.
    pub status: String,
    /// Every step and fan-out item: input, output, status, agent, model,
    /// confidence, timing.
    pub steps: Vec<Value>,
    /// The event log, oldest first.
    pub events: Vec<Value>,
}

/// One agent as `list_agents` shows it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct AgentInfo {
    pub name: String,
    pub description: Option<String>,
    /// The specialist spec it serves (none for outside MCP servers).
    pub spec: Option<String>,
    pub version: Option<String>,
    pub model: Option<String>,
    /// Where it runs: a command (stdio) or URLs.
    pub runs: String,
    /// Whether a connection is open now.
    pub connected: bool,
    /// Its tools as this gateway names them.
    pub tools: Vec<String>,
    /// Calls, errors, latency, tokens and escalations, from the store.
    pub stats: Option<Value>,
}

/// Every agent.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct AgentList {
    pub agents: Vec<AgentInfo>,
    /// The agent that takes low-confidence answers, if any.
    pub fallback: Option<String>,
}

impl Gateway {
    /// A gateway over `controller`, with model cards from `catalog`.
    pub fn new(
        controller: Arc<Controller>,
        catalog: &triage_models::Catalog,
        options: GatewayOptions,
    ) -> anyhow::Result<Gateway> {
        let agents = Agents::from_registry(&controller.registry);
        let workflows = library::load(options.workflows.as_deref(), &agents)?;
        for w in &workflows {
            if let Err(e) = &w.plan {
                tracing::warn!(
                    "workflow {} does not validate and cannot run:\n{e}",
                    w.path.display()
                );
            }
        }
        let mut forwarded = BTreeMap::new();
        let mut cards = BTreeMap::new();
        for agent in controller.registry.agents() {
            let Some(spec) = &agent.spec else { continue };
            cards.insert(agent.name().to_string(), ModelCard::new(spec, catalog, MINILM));
            for mut def in SpecialistServer::tools_for(spec) {
                let name = tool_name(agent.name(), &def.name);
                let tool = def.name.to_string();
                def.description = Some(
                    format!(
                        "[{} specialist] {}",
                        agent.name(),
                        def.description.as_deref().unwrap_or("")
                    )
                    .into(),
                );
                def.name = name.clone().into();
                forwarded.insert(
                    name,
                    Forwarded {
                        agent: agent.name().to_string(),
                        tool,
                        def,
                    },
                );
            }
        }
        let shared = Shared {
            controller,
            options,
            forwarded,
            workflows,
            agents,
            cards,
            live: LiveRuns::default(),
            peers: Mutex::new(Vec::new()),
            subscribers: Mutex::new(BTreeMap::new()),
            sessions: std::sync::atomic::AtomicU64::new(0),
        };
        let max = shared.options.max_calls.max(1);
        let gateway = Gateway {
            shared: Arc::new(shared),
            session: 0,
            calls: Arc::new(Semaphore::new(max)),
            log_level: Arc::new(Mutex::new(None)),
            tool_router: Self::tool_router(),
        };
        if let Some(list) = &gateway.shared.options.allow_tools {
            let mut all: Vec<String> = gateway
                .tool_router
                .list_all()
                .iter()
                .map(|t| t.name.to_string())
                .collect();
            all.extend(gateway.shared.forwarded.keys().cloned());
            for pattern in list {
                if !all.iter().any(|n| tool_matches(pattern, n)) {
                    anyhow::bail!(
                        "the tool allow list names `{pattern}`, which matches no tool; the tools are: {}",
                        all.join(", ")
                    );
                }
            }
        }
        Ok(gateway)
    }

    /// The same gateway for a new client session: shared controller and
    /// runs, its own cap on calls in flight and its own log level.
    pub fn session(&self) -> Gateway {
        Gateway {
            shared: self.shared.clone(),
            session: self
                .shared
                .sessions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
            calls: Arc::new(Semaphore::new(self.shared.options.max_calls.max(1))),
            log_level: Arc::new(Mutex::new(None)),
            tool_router: self.tool_router.clone(),
        }
    }

    /// Closes every agent connection (ending the specialists' processes).
    pub async fn shutdown(&self) {
        self.shared.controller.shutdown().await;
    }

    /// Runs in progress in this process.
    pub fn live_runs(&self) -> Vec<String> {
        self.shared.live.ids()
    }

    /// Every tool a client may see, in name order.
    fn tools(&self) -> Vec<Tool> {
        let mut tools = self.tool_router.list_all();
        tools.extend(self.shared.forwarded.values().map(|f| f.def.clone()));
        tools.retain(|t| self.allowed(&t.name));
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    fn allowed(&self, name: &str) -> bool {
        match &self.shared.options.allow_tools {
            None => true,
            Some(list) => list.iter().any(|p| tool_matches(p, name)),
        }
    }

    /// Logs to this session's client, when it asked for this level.
    async fn log(&self, peer: &Peer<RoleServer>, level: LoggingLevel, data: Value) {
        let wanted = *self
            .log_level
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if wanted.is_some_and(|w| severity(level) >= severity(w)) {
            let p = LoggingMessageNotificationParam::new(level, data).with_logger("triage");
            let _ = peer.notify_logging_message(p).await;
        }
    }

    /// Tells every connected session that the resource list changed.
    async fn resources_changed(&self) {
        let peers: Vec<Peer<RoleServer>> = {
            let mut peers = self
                .shared
                .peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        for p in peers {
            let _ = p.notify_resource_list_changed().await;
        }
    }

    /// Tells the sessions subscribed to run `id` that it changed.
    async fn run_updated(&self, id: &str) {
        let uri = run_uri(id);
        let peers: Vec<Peer<RoleServer>> = {
            let mut subs = self
                .shared
                .subscribers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match subs.get_mut(&uri) {
                Some(list) => {
                    list.retain(|(_, p)| !p.is_transport_closed());
                    list.iter().map(|(_, p)| p.clone()).collect()
                }
                None => Vec::new(),
            }
        };
        for p in peers {
            let _ = p
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri.clone()))
                .await;
        }
    }

    /// The plan for a `run_workflow` call.
    fn plan_for(&self, p: &RunWorkflowParams) -> Result<Plan, String> {
        match (&p.workflow, &p.spec) {
            (Some(_), Some(_)) => {
                Err("give either `workflow` (a name) or `spec` (YAML text), not both".into())
            }
            (None, None) => Err(format!(
                "give `workflow` (one of: {}) or `spec` (a workflow spec as YAML text)",
                self.workflow_names().join(", ")
            )),
            (None, Some(spec)) => Plan::parse(Path::new("inline.yaml"), spec, &self.shared.agents)
                .map_err(|e| format!("the spec does not validate:\n{e}")),
            (Some(name), None) => {
                let entry = self
                    .shared
                    .workflows
                    .iter()
                    .find(|w| &w.name == name)
                    .ok_or_else(|| {
                        format!(
                            "there is no workflow `{name}`; this gateway offers: {}",
                            self.workflow_names().join(", ")
                        )
                    })?;
                entry
                    .plan
                    .clone()
                    .map_err(|e| format!("workflow `{name}` does not validate, so it cannot run:\n{e}"))
            }
        }
    }

    fn workflow_names(&self) -> Vec<String> {
        self.shared.workflows.iter().map(|w| w.name.clone()).collect()
    }

    /// Forwards a call to a specialist tool, with progress and
    /// cancellation passed through.
    async fn forward(
        &self,
        f: &Forwarded,
        arguments: Option<JsonObject>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let agent = self
            .shared
            .controller
            .registry
            .get(&f.agent)
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let (options, forwarding) = call_options(&ctx);
        let result = dispatch::call(&agent, &f.tool, arguments.unwrap_or_default(), &options).await;
        drop(options);
        let _ = forwarding.await;
        match result {
            Ok(outcome) => Ok(outcome.result),
            Err(dispatch::DispatchError::Rejected { message, .. }) => Err(McpError::invalid_params(
                format!("`{}`: {message}", tool_name(&f.agent, &f.tool)),
                None,
            )),
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())])),
        }
    }
}

/// Call options that cancel with the request and send the agent's progress
/// on to the client (when it gave a progress token); the task ends when
/// the options are dropped.
fn call_options(ctx: &RequestContext<RoleServer>) -> (CallOptions, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<dispatch::Progress>();
    let token = ctx.meta.get_progress_token();
    let peer = ctx.peer.clone();
    let forwarding = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if let Some(token) = &token {
                let mut n = ProgressNotificationParam::new(token.clone(), p.progress);
                n.total = p.total;
                n.message = Some(match p.message {
                    Some(m) => format!("{}: {m}", p.agent),
                    None => p.agent,
                });
                let _ = peer.notify_progress(n).await;
            }
        }
    });
    let options = CallOptions {
        progress: Some(tx),
        cancel: ctx.ct.clone(),
        ..Default::default()
    };
    (options, forwarding)
}

/// Whether an allow-list entry (a name, or a prefix ending in `*`) admits
/// the tool `name`.
fn tool_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// `AGENT_TOOL`, made of the characters clients accept and at most 64 long.
pub fn tool_name(agent: &str, tool: &str) -> String {
    let mut name: String = format!("{agent}_{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(MAX_TOOL_NAME);
    name
}

fn severity(l: LoggingLevel) -> u8 {
    match l {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

fn run_uri(id: &str) -> String {
    format!("triage://runs/{id}")
}

fn card_uri(agent: &str) -> String {
    format!("triage://agents/{agent}/model-card")
}

fn workflow_uri(name: &str) -> String {
    format!("triage://workflows/{name}")
}

fn to_values<T: Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
        .collect()
}

#[tool_router(router = tool_router)]
impl Gateway {
    #[tool(
        description = "Answer a task with the right specialist: the router picks legal, finance, code or general; a low-confidence answer goes through the cascade (more samples, then the fallback if one is configured). Returns the answer, who answered with which model, the confidence and the escalation path. Sends progress while the model generates."
    )]
    async fn ask(
        &self,
        Parameters(p): Parameters<AskParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<AskOutcome>, String> {
        if let Some(c) = p.min_confidence
            && !(0.0..=1.0).contains(&c)
        {
            return Err(format!("`min_confidence` must be between 0 and 1, not {c}"));
        }
        let req = AskRequest {
            text: p.task,
            domain: p.domain,
            min_confidence: p.min_confidence,
            escalate: p.escalate.unwrap_or(true),
            max_tokens: p.max_tokens,
            nearest: 2,
        };
        let (options, forwarding) = call_options(&ctx);
        let outcome = self.shared.controller.ask(&req, &options).await;
        drop(options);
        let _ = forwarding.await;
        outcome.map(Json).map_err(|e| format!("{e:#}"))
    }

    #[tool(
        description = "Which specialist a task would go to, and why: every candidate with its probability and nearest example requests. Nothing is answered."
    )]
    async fn route(&self, Parameters(p): Parameters<RouteParams>) -> Result<Json<RouteDecision>, String> {
        self.shared
            .controller
            .route(&p.task, None, p.nearest.unwrap_or(2))
            .await
            .map(|(d, _)| Json(d))
            .map_err(|e| format!("{e:#}"))
    }

    #[tool(
        description = "Run a workflow (a name from the triage://workflows resources, or a whole spec as YAML) with its inputs. Every step is recorded durably; progress is sent per step; cancelling the call cancels the run. Returns the run id, its status and outputs; read triage://runs/{id} or call get_run for every step."
    )]
    async fn run_workflow(
        &self,
        Parameters(p): Parameters<RunWorkflowParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<RunResult>, String> {
        let plan = self.plan_for(&p)?;
        let given: BTreeMap<String, Value> = p.inputs.into_iter().collect();
        let inputs = exec::resolve_inputs(&plan, given).map_err(|e| format!("{e:#}"))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
        let token = ctx.meta.get_progress_token();
        let peer = ctx.peer.clone();
        let me = self.clone();
        let workflow = plan.name.clone();
        // Progress per finished step; the resource list changes when the run
        // starts.
        let watcher = tokio::spawn(async move {
            let (mut done, mut total) = (0usize, 0usize);
            let mut run_id = String::new();
            while let Some(event) = rx.recv().await {
                if matches!(event, Progress::StepFinished { .. }) {
                    me.run_updated(&run_id).await;
                }
                let message = match event {
                    Progress::RunStarted { id, steps } => {
                        total = steps;
                        run_id = id.clone();
                        me.resources_changed().await;
                        me.log(
                            &peer,
                            LoggingLevel::Info,
                            json!({ "event": "run_started", "run": id, "workflow": workflow }),
                        )
                        .await;
                        Some(format!("run {id} started: {steps} steps"))
                    }
                    Progress::StepRestored { step, .. } => {
                        done += 1;
                        Some(format!("{step} kept from before"))
                    }
                    Progress::StepFinished {
                        step,
                        status,
                        confidence,
                        ..
                    } => {
                        done += 1;
                        let status = serde_json::to_value(status).unwrap_or(Value::Null);
                        Some(match confidence {
                            Some(c) => {
                                format!("{step} {} (confidence {c:.2})", status.as_str().unwrap_or(""))
                            }
                            None => format!("{step} {}", status.as_str().unwrap_or("")),
                        })
                    }
                    Progress::StepStarted { .. } | Progress::ItemFinished { .. } => None,
                };
                if let (Some(token), Some(message)) = (&token, message) {
                    let mut n = ProgressNotificationParam::new(token.clone(), done as f64);
                    n.total = Some(total as f64);
                    n.message = Some(message);
                    let _ = peer.notify_progress(n).await;
                }
            }
        });
        let options = RunOptions {
            cancel: ctx.ct.clone(),
            progress: Some(tx),
            live: Some(self.shared.live.clone()),
        };
        let outcome = exec::start(
            self.shared.controller.clone(),
            plan,
            inputs,
            &self.shared.options.runs,
            options,
        )
        .await;
        let _ = watcher.await;
        let outcome = outcome.map_err(|e| format!("{e:#}"))?;
        self.run_updated(&outcome.id).await;
        self.resources_changed().await;
        let level = if outcome.status == RunStatus::Completed {
            LoggingLevel::Info
        } else {
            LoggingLevel::Warning
        };
        self.log(
            &ctx.peer,
            level,
            json!({ "event": "run_ended", "run": outcome.id, "status": outcome.status, "error": outcome.error }),
        )
        .await;
        let result = RunResult {
            resource: run_uri(&outcome.id),
            run_id: outcome.id,
            status: outcome.status.as_str().into(),
            outputs: outcome.outputs,
            error: outcome.error,
            steps_run: outcome.steps_run,
            wall_ms: outcome.wall_ms,
        };
        if outcome.status == RunStatus::Completed {
            Ok(Json(result))
        } else {
            Err(format!(
                "run {} {}: {}; see get_run or {}",
                result.run_id,
                result.status,
                result.error.as_deref().unwrap_or("no reason recorded"),
                result.resource
            ))
        }
    }

    #[tool(
        description = "A workflow run by id: its status, inputs, outputs, every step (input, output, agent, model, confidence, timing) and its event log. Works while the run is in progress."
    )]
    async fn get_run(&self, Parameters(p): Parameters<GetRunParams>) -> Result<Json<RunReport>, String> {
        self.run_report(&p.id).map(Json)
    }

    #[tool(
        description = "The agents behind this gateway: each specialist's spec, version, model, where it runs, whether it is connected, its tools as named here, and its call statistics."
    )]
    async fn list_agents(&self) -> Result<Json<AgentList>, String> {
        let c = &self.shared.controller;
        let stats = c.store.agent_stats().unwrap_or_default();
        let mut agents = Vec::new();
        for a in c.registry.agents() {
            agents.push(AgentInfo {
                name: a.name().into(),
                description: a
                    .entry
                    .description
                    .clone()
                    .or_else(|| a.spec.as_ref().map(|s| s.description.clone())),
                spec: a.spec.as_ref().map(|s| s.name.clone()),
                version: a.spec.as_ref().map(|s| s.version.clone()),
                model: a.spec.as_ref().map(|s| s.model.clone()),
                runs: a.location(),
                connected: a.is_connected().await,
                tools: self
                    .shared
                    .forwarded
                    .iter()
                    .filter(|(name, f)| f.agent == a.name() && self.allowed(name))
                    .map(|(name, _)| name.clone())
                    .collect(),
                stats: stats
                    .get(a.name())
                    .map(|s| serde_json::to_value(s).unwrap_or(Value::Null)),
            });
        }
        Ok(Json(AgentList {
            agents,
            fallback: c.registry.cascade.fallback.as_ref().map(|f| f.agent.clone()),
        }))
    }
}

impl Gateway {
    fn run_report(&self, id: &str) -> Result<RunReport, String> {
        let view = runs::read_run(&self.shared.options.runs, id, Some(&self.shared.live)).map_err(|e| match e {
            runs::RunsError::Store(crate::store::StoreError::Busy { holder, .. }) => {
                format!("run {id} is being executed by {holder}, outside this gateway; read it when it finishes")
            }
            e => e.to_string(),
        })?;
        Ok(RunReport {
            run: view.run,
            status: view.status.as_str().into(),
            steps: to_values(&view.steps),
            events: to_values(&view.events),
        })
    }

    fn resources(&self) -> Vec<Resource> {
        let mut out = Vec::new();
        for w in &self.shared.workflows {
            out.push(
                Resource::new(workflow_uri(&w.name), format!("workflow-{}", w.name))
                    .with_title(format!("Workflow spec: {}", w.name))
                    .with_description(match &w.plan {
                        Ok(p) => p.description.clone(),
                        Err(_) => "does not validate; read it for the errors".into(),
                    })
                    .with_mime_type("application/yaml"),
            );
        }
        for name in self.shared.cards.keys() {
            out.push(
                Resource::new(card_uri(name), format!("{name}-model-card"))
                    .with_title(format!("Model card of the {name} specialist"))
                    .with_description("Model, version, sha256, licence, parameters and measured accuracy")
                    .with_mime_type("application/json"),
            );
        }
        // The newest runs; older ones stay readable through the template.
        for r in runs::list(&self.shared.options.runs).into_iter().take(50) {
            let Some(id) = r.meta.get("id").and_then(Value::as_str) else {
                continue;
            };
            let workflow = r.meta.get("workflow").and_then(Value::as_str).unwrap_or("?");
            out.push(
                Resource::new(run_uri(id), format!("run-{id}"))
                    .with_title(format!("Run {id} of {workflow} ({})", r.status.as_str()))
                    .with_mime_type("application/json"),
            );
        }
        out
    }

    fn prompts(&self) -> Vec<Prompt> {
        self.shared
            .workflows
            .iter()
            .filter_map(|w| {
                let plan = w.plan.as_ref().ok()?;
                let args: Vec<PromptArgument> = plan
                    .inputs
                    .iter()
                    .map(|(name, input)| {
                        let mut d = format!("({})", input.kind.name());
                        if !input.description.is_empty() {
                            d = format!("{} {d}", input.description);
                        }
                        PromptArgument::new(name.clone())
                            .with_description(d)
                            .with_required(input.default.is_none())
                    })
                    .collect();
                Some(Prompt::new(
                    &w.name,
                    Some(format!("Run the `{}` workflow: {}", w.name, plan.description)),
                    Some(args),
                ))
            })
            .collect()
    }
}

impl ServerHandler for Gateway {
    /// Up to 2025-11-25: the revisions with sessions, server notifications
    /// and logging that this gateway is built on.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    fn get_info(&self) -> ServerConfig {
        let mut info = Implementation::from_build_env();
        info.name = "triage".into();
        info.version = env!("CARGO_PKG_VERSION").into();
        info.title = Some("triage: a team of small language models".into());
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_list_changed()
                .enable_resources_subscribe()
                .enable_prompts()
                .enable_logging()
                .enable_completions()
                .build(),
        )
        .with_server_info(info)
        .with_instructions(
            "triage answers tasks with small local specialists (legal, finance, code, general). \
             Use `ask` for a task in plain language (it is routed and checked for confidence), \
             `run_workflow` for a multi-step job (see the workflow resources and prompts), and the \
             AGENT_TOOL tools (legal_classify_clauses, finance_sentiment, ...) for one specialist tool.",
        )
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut peers = self
            .shared
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.retain(|p| !p.is_transport_closed());
        peers.push(context.peer);
    }

    /// Completes run ids for `triage://runs/{id}`, and workflow prompt
    /// arguments from their defaults (and true/false for booleans). Other
    /// references have nothing to offer: an empty list.
    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let typed = &request.argument.value;
        let candidates: Vec<String> = match &request.r#ref {
            Reference::Resource(r) if r.uri == "triage://runs/{id}" && request.argument.name == "id" => {
                runs::list(&self.shared.options.runs)
                    .into_iter()
                    .filter_map(|r| r.meta.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            }
            Reference::Prompt(p) => self
                .shared
                .workflows
                .iter()
                .find(|w| w.name == p.name)
                .and_then(|w| w.plan.as_ref().ok())
                .and_then(|plan| plan.inputs.get(&request.argument.name))
                .map(|input| {
                    let mut values = Vec::new();
                    if let Some(d) = &input.default {
                        values.push(match d {
                            Value::String(s) => s.clone(),
                            v => v.to_string(),
                        });
                    }
                    if input.kind == crate::workflow::spec::InputType::Boolean {
                        values.extend(["true".to_string(), "false".to_string()]);
                        values.dedup();
                    }
                    values
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let matching: Vec<String> = candidates
            .into_iter()
            .filter(|c| c.starts_with(typed.as_str()))
            .collect();
        let total = matching.len();
        let values: Vec<String> = matching.into_iter().take(CompletionInfo::MAX_VALUES).collect();
        let info =
            CompletionInfo::with_pagination(values, Some(total as u32), total > CompletionInfo::MAX_VALUES)
                .map_err(|e| McpError::internal_error(e, None))?;
        Ok(CompleteResult::new(info))
    }

    /// Subscribes the session to a run's resource: it hears
    /// `notifications/resources/updated` as each step finishes and when the
    /// run ends.
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let Some(id) = request.uri.strip_prefix("triage://runs/") else {
            return Err(McpError::invalid_params(
                format!(
                    "`{}` does not change while the gateway runs; only runs (triage://runs/ID) can be subscribed to",
                    request.uri
                ),
                None,
            ));
        };
        self.run_report(id)
            .map_err(|e| McpError::resource_not_found(e, None))?;
        let mut subs = self
            .shared
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = subs.entry(request.uri).or_default();
        list.retain(|(s, p)| *s != self.session && !p.is_transport_closed());
        list.push((self.session, context.peer));
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let mut subs = self
            .shared
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(list) = subs.get_mut(&request.uri) {
            list.retain(|(s, p)| *s != self.session && !p.is_transport_closed());
        }
        Ok(())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        *self
            .log_level
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(request.level);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        if !self.allowed(name) {
            return None;
        }
        self.tool_router
            .get(name)
            .cloned()
            .or_else(|| self.shared.forwarded.get(name).map(|f| f.def.clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let known = self.tool_router.has_route(&name) || self.shared.forwarded.contains_key(&name);
        if !known || !self.allowed(&name) {
            return Err(McpError::invalid_params(
                format!("no tool `{name}` on this gateway; tools/list shows the tools it offers"),
                None,
            ));
        }
        let Ok(_permit) = self.calls.clone().try_acquire_owned() else {
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "too many calls in flight on this session (at most {}); wait for one to finish and call again",
                self.shared.options.max_calls.max(1)
            ))])
            .into());
        };
        if let Some(f) = self.shared.forwarded.get(&name) {
            let peer = context.peer.clone();
            let result = self.forward(f, request.arguments, context).await?;
            if result.is_error == Some(true) {
                self.log(
                    &peer,
                    LoggingLevel::Warning,
                    json!({ "event": "tool_failed", "tool": name }),
                )
                .await;
            }
            return Ok(result.into());
        }
        self.tool_router
            .call(ToolCallContext::new(self, request, context))
            .await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(self.prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let Some(plan) = self
            .shared
            .workflows
            .iter()
            .find(|w| w.name == request.name)
            .and_then(|w| w.plan.as_ref().ok())
        else {
            let known: Vec<String> = self.prompts().into_iter().map(|p| p.name).collect();
            return Err(McpError::invalid_params(
                format!(
                    "no prompt `{}`; this gateway has: {}",
                    request.name,
                    known.join(", ")
                ),
                None,
            ));
        };
        let given = request.arguments.unwrap_or_default();
        let mut inputs = Map::new();
        for (name, input) in &plan.inputs {
            match given.get(name) {
                Some(v) => {
                    // Prompt arguments are strings; typed inputs are JSON.
                    let value = match (v, input.kind) {
                        (Value::String(s), kind) if kind != crate::workflow::spec::InputType::String => {
                            serde_json::from_str(s).unwrap_or_else(|_| v.clone())
                        }
                        _ => v.clone(),
                    };
                    inputs.insert(name.clone(), value);
                }
                None if input.default.is_none() => {
                    return Err(McpError::invalid_params(
                        format!("prompt `{}` needs the argument `{name}`", request.name),
                        None,
                    ));
                }
                None => {}
            }
        }
        if let Some(extra) = given.keys().find(|k| !plan.inputs.contains_key(*k)) {
            return Err(McpError::invalid_params(
                format!(
                    "prompt `{}` has no argument `{extra}`; its arguments are: {}",
                    request.name,
                    plan.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                None,
            ));
        }
        let call = json!({ "workflow": plan.name, "inputs": inputs });
        let text = format!(
            "Run the triage workflow `{}` ({}) by calling the `run_workflow` tool with these arguments:\n\n{}\n\nThen report its outputs{}.",
            plan.name,
            plan.description.trim(),
            serde_json::to_string_pretty(&call).unwrap_or_default(),
            if plan.outputs.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    plan.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        );
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                .with_description(format!("Run the {} workflow", plan.name))
                .into(),
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(self.resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("triage://runs/{id}", "run")
                .with_title("A workflow run")
                .with_description(
                    "A run's record, every step and its event log (the id comes from run_workflow)",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.clone();
        let json_text = |v: Value| -> Result<ReadResourceResponse, McpError> {
            Ok(ReadResourceResult::new(vec![
                ResourceContents::text(serde_json::to_string_pretty(&v).unwrap_or_default(), uri.clone())
                    .with_mime_type("application/json"),
            ])
            .into())
        };
        let not_found = || {
            McpError::resource_not_found(
                format!(
                    "no resource `{uri}`; resources/list shows them (runs are triage://runs/ID, model cards triage://agents/NAME/model-card, specs triage://workflows/NAME)"
                ),
                None,
            )
        };
        if let Some(id) = uri.strip_prefix("triage://runs/") {
            return match self.run_report(id) {
                Ok(report) => json_text(serde_json::to_value(report).unwrap_or(Value::Null)),
                Err(e) if e.starts_with("no run") => Err(McpError::resource_not_found(e, None)),
                Err(e) => Err(McpError::internal_error(e, None)),
            };
        }
        if let Some(name) = uri
            .strip_prefix("triage://agents/")
            .and_then(|r| r.strip_suffix("/model-card"))
        {
            return match self.shared.cards.get(name) {
                Some(card) => json_text(serde_json::to_value(card).unwrap_or(Value::Null)),
                None => Err(not_found()),
            };
        }
        if let Some(name) = uri.strip_prefix("triage://workflows/") {
            return match self.shared.workflows.iter().find(|w| w.name == name) {
                Some(w) => Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(w.source.clone(), uri.clone()).with_mime_type("application/yaml"),
                ])
                .into()),
                None => Err(not_found()),
            };
        }
        Err(not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_names_are_what_clients_accept() {
        assert_eq!(tool_name("legal", "classify_clauses"), "legal_classify_clauses");
        assert_eq!(tool_name("my.agent", "do it"), "my_agent_do_it");
        let long = tool_name(&"a".repeat(50), &"b".repeat(50));
        assert_eq!(long.len(), 64);
        let ok = regex::Regex::new("^[a-zA-Z0-9_-]{1,64}$").unwrap();
        assert!(ok.is_match(&long));
    }
}
