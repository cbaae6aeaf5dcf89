//! A workflow spec validated into a plan: every reference resolved, the
//! steps a DAG (petgraph), before anything runs.
//!
//! Every problem found is reported, each with the file, line and column
//! and what was expected: YAML syntax, an unknown or missing field, a step
//! that does not say what it does, an unknown step in `needs` or in a
//! template, a cycle (with the steps on it), an agent or tool the registry
//! does not have, arguments that do not fit a tool's input schema.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::{Marker, Node, Span, Spanned};
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value};

use super::spec::{InputType, StepSpec, WorkflowSpec, node_to_json, parse_duration};
use super::template;

/// Steps (and fan-out items) at once when the spec does not say.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// First retry pause when the spec does not say.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);

/// One problem in a spec, where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Everything wrong with one spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                p.line,
                p.column,
                p.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// What validation knows about the agents a plan may call.
#[derive(Debug, Clone, Default)]
pub struct Agents {
    /// Agent name → its tools (name → input schema), where they can be
    /// known without connecting (our specialists); `None` for any other
    /// MCP server.
    pub tools: BTreeMap<String, Option<BTreeMap<String, Value>>>,
    /// Agents that answer `prompt` steps (specialists with `ask`).
    pub specialists: BTreeSet<String>,
}

impl Agents {
    /// The registered agents: our specialists with the tools (and input
    /// schemas) their specs serve, any other MCP server with its tools
    /// unknown until it is connected.
    pub fn from_registry(registry: &crate::registry::Registry) -> Agents {
        let mut agents = Agents::default();
        for a in registry.agents() {
            let tools = a.spec.as_ref().map(|spec| {
                if spec.tools.iter().any(|t| t == "ask") {
                    agents.specialists.insert(a.name().to_string());
                }
                triage_agents::SpecialistServer::tools_for(spec)
                    .into_iter()
                    .map(|t| (t.name.to_string(), Value::Object((*t.input_schema).clone())))
                    .collect()
            });
            agents.tools.insert(a.name().to_string(), tools);
        }
        agents
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Call `tool` on `agent` with the step's `with` arguments.
    Tool { agent: String, tool: String },
    /// Ask `prompt` through the controller: of `agent`, or of whichever
    /// specialist the router picks when `None`.
    Ask { agent: Option<String>, prompt: String },
}

/// A validated step.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub action: Action,
    /// Arguments, strings still templates.
    pub with: Map<String, Value>,
    /// Indices of the steps this one waits for (named in `needs` or read by
    /// its templates), sorted.
    pub needs: Vec<usize>,
    pub when: Option<String>,
    pub for_each: Option<String>,
    pub attempts: u32,
    pub backoff: Duration,
    pub timeout: Option<Duration>,
    pub min_confidence: Option<f64>,
    pub max_tokens: Option<usize>,
}

/// An input with its type and default.
#[derive(Debug, Clone)]
pub struct Input {
    pub kind: InputType,
    pub description: String,
    pub default: Option<Value>,
}

/// A workflow ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub path: PathBuf,
    /// The spec as written (stored with each run, so a run resumes with the
    /// plan it started with).
    pub source: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub inputs: BTreeMap<String, Input>,
    pub steps: Vec<Step>,
    /// Edges from each step to the steps that need it.
    pub graph: DiGraph<usize, ()>,
    /// The steps in an order where each comes after all it needs.
    pub order: Vec<usize>,
    pub outputs: BTreeMap<String, String>,
    pub concurrency: usize,
}

impl Plan {
    /// Reads and validates the spec at `path`.
    pub fn load(path: &Path, agents: &Agents) -> Result<Plan, SpecErrors> {
        let source = std::fs::read_to_string(path).map_err(|e| SpecErrors {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Plan::parse(path, &source, agents)
    }

    /// Validates `source`, reporting positions in `path`.
    pub fn parse(path: &Path, source: &str, agents: &Agents) -> Result<Plan, SpecErrors> {
        let fail = |problems: Vec<Problem>| SpecErrors {
            path: path.to_path_buf(),
            problems,
        };
        let options = yaml_options();
        let root = marked_yaml::parse_yaml_with_options(0, source, options)
            .map_err(|e| fail(vec![load_problem(&e)]))?;
        let spec: WorkflowSpec = marked_yaml::from_node(&root).map_err(|e| {
            let (line, column) = e.start_mark().map_or((1, 1), |m| (m.line(), m.column()));
            let inner: &marked_yaml::Error = &e;
            fail(vec![Problem {
                line,
                column,
                message: serde_message(&inner.to_string()),
            }])
        })?;
        let mut v = Validator {
            problems: Vec::new(),
            agents,
        };
        let plan = v.plan(path, source, &root, spec);
        if v.problems.is_empty() {
            Ok(plan.expect("a plan when nothing is wrong"))
        } else {
            let mut problems = v.problems;
            problems.sort();
            problems.dedup();
            Err(fail(problems))
        }
    }

    /// Index of the step called `id`.
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }
}

/// How specs are read: a key given twice is an error, and a quoted
/// scalar stays a string (`"64"`), an unquoted one is typed (`64`).
pub fn yaml_options() -> marked_yaml::LoaderOptions {
    marked_yaml::LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true)
}

/// A YAML loader error as a problem.
fn load_problem(e: &marked_yaml::LoadError) -> Problem {
    use marked_yaml::LoadError as E;
    let at = |m: &Marker, message: String| Problem {
        line: m.line(),
        column: m.column(),
        message,
    };
    match e {
        E::ScanError(m, s) => at(m, format!("YAML syntax: {s}")),
        E::TopLevelMustBeMapping(m) => at(
            m,
            "a workflow is a mapping (`name:`, `version:`, `steps:` ...), not a list or a value".into(),
        ),
        E::TopLevelMustBeSequence(m) => at(m, "expected a list".into()),
        E::UnexpectedAnchor(m) => at(
            m,
            "YAML anchors and aliases are not supported in workflows; write the value out".into(),
        ),
        E::MappingKeyMustBeScalar(m) => at(m, "a key must be a plain name".into()),
        E::UnexpectedTag(m) => at(m, "YAML tags (`!name`) are not supported in workflows".into()),
        E::DuplicateKey(d) => {
            let m = d
                .key
                .span()
                .start()
                .copied()
                .unwrap_or_else(|| Marker::new(0, 0, 1, 1));
            at(
                &m,
                format!(
                    "`{}` is given twice in the same mapping; keep one",
                    d.key.as_str()
                ),
            )
        }
    }
}

/// serde's messages, in the words of a spec (`unknown field `x`,
/// expected one of ...`).
fn serde_message(raw: &str) -> String {
    let m = raw.trim();
    let m = m
        .strip_prefix("Unknown field")
        .map_or_else(|| m.to_string(), |rest| format!("unknown field{rest}"));
    if m.starts_with("missing field") {
        format!("{m}: every workflow has `name`, `version` and `steps`, every step an `id`")
    } else {
        m
    }
}

struct Validator<'a> {
    problems: Vec<Problem>,
    agents: &'a Agents,
}

impl Validator<'_> {
    fn at(&mut self, span: &Span, message: impl Into<String>) {
        let (line, column) = span.start().map_or((1, 1), |m| (m.line(), m.column()));
        self.problems.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }

    fn at_node(&mut self, node: Option<&Node>, fallback: &Span, message: impl Into<String>) {
        let span = node.map_or(*fallback, |n| *n.span());
        self.at(&span, message);
    }

    fn plan(&mut self, path: &Path, source: &str, root: &Node, spec: WorkflowSpec) -> Option<Plan> {
        let name_span = *spec.name.span();
        if spec.steps.is_empty() {
            self.at(
                &name_span,
                "the workflow has no steps; add at least one under `steps:`",
            );
        }
        // Inputs, with defaults typed as YAML reads them.
        let mut inputs = BTreeMap::new();
        for (name, input) in &spec.inputs {
            let node = child(root, "inputs").and_then(|n| child(n, name));
            let default = node.and_then(|n| child(n, "default")).map(node_to_json);
            if let Some(d) = &default
                && !input.kind.admits(d)
            {
                self.at_node(
                    node.and_then(|n| child(n, "default")),
                    &name_span,
                    format!("the default of input `{name}` is not a {}", input.kind.name()),
                );
            }
            inputs.insert(
                name.clone(),
                Input {
                    kind: input.kind,
                    description: input.description.clone(),
                    default,
                },
            );
        }

        // Step ids first, so references can be checked in any order.
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for (i, s) in spec.steps.iter().enumerate() {
            let id = s.id.as_str();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.at(
                    s.id.span(),
                    format!("step id `{id}` must be letters, digits, `_` or `-` (it is used as steps.{id} in templates)"),
                );
            }
            if id.contains('-') {
                self.at(
                    s.id.span(),
                    format!("step id `{id}` has a `-`, which templates read as a minus; use `_`"),
                );
            }
            if ids.insert(id.to_string(), i).is_some() {
                self.at(
                    s.id.span(),
                    format!("there are two steps called `{id}`; step ids must be unique"),
                );
            }
        }
        let step_nodes: Vec<Option<&Node>> = (0..spec.steps.len())
            .map(|i| {
                child(root, "steps")
                    .and_then(Node::as_sequence)
                    .and_then(|seq| seq.get_node(i))
            })
            .collect();

        let mut steps = Vec::new();
        for (i, s) in spec.steps.iter().enumerate() {
            if let Some(step) = self.step(s, step_nodes[i], &ids, &inputs, i) {
                steps.push(step);
            }
        }

        let mut outputs = BTreeMap::new();
        for (name, tpl) in &spec.outputs {
            self.template_refs(tpl.as_str(), tpl.span(), &ids, &inputs, false);
            outputs.insert(name.clone(), tpl.as_str().to_string());
        }
        let concurrency = spec.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            self.at(&name_span, "`concurrency` must be at least 1");
        }
        if !self.problems.is_empty() || steps.len() != spec.steps.len() {
            return None;
        }

        // The DAG: an edge from each needed step to the step needing it.
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..steps.len()).map(|i| graph.add_node(i)).collect();
        for (i, s) in steps.iter().enumerate() {
            for &n in &s.needs {
                graph.add_edge(nodes[n], nodes[i], ());
            }
        }
        let order = match toposort(&graph, None) {
            Ok(order) => order.into_iter().map(|n| graph[n]).collect(),
            Err(_) => {
                for component in tarjan_scc(&graph) {
                    let on_cycle =
                        component.len() > 1 || component.iter().any(|&n| graph.contains_edge(n, n));
                    if !on_cycle {
                        continue;
                    }
                    let members: BTreeSet<usize> = component.iter().map(|&n| graph[n]).collect();
                    let cycle = cycle_order(&steps, &members);
                    let first = spec.steps[cycle[0]].id.span();
                    let names: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
                    self.at(
                        first,
                        format!(
                            "the steps {} → {} form a cycle (each needs the next); a step cannot need itself, directly or through others",
                            names.join(" → "),
                            names[0]
                        ),
                    );
                }
                return None;
            }
        };
        Some(Plan {
            path: path.to_path_buf(),
            source: source.to_string(),
            name: spec.name.as_str().to_string(),
            version: spec.version.as_str().to_string(),
            description: spec.description,
            inputs,
            steps,
            graph,
            order,
            outputs,
            concurrency,
        })
    }

    fn step(
        &mut self,
        s: &StepSpec,
        node: Option<&Node>,
        ids: &BTreeMap<String, usize>,
        inputs: &BTreeMap<String, Input>,
        index: usize,
    ) -> Option<Step> {
        let id = s.id.as_str().to_string();
        let here = *s.id.span();
        let before = self.problems.len();
        let fan_out = s.for_each.is_some();
        let mut needs = BTreeSet::new();

        let action = match (&s.tool, &s.prompt, &s.route, &s.agent) {
            (Some(_), Some(p), _, _) => {
                self.at(p.span(), format!("step `{id}` has both `tool` and `prompt`; a step either calls a tool or asks a prompt"));
                None
            }
            (Some(_), None, Some(r), _) => {
                self.at(r.span(), format!("step `{id}`: `route: auto` picks a specialist for a `prompt`; a `tool` step names its `agent` instead"));
                None
            }
            (Some(tool), None, None, None) => {
                self.at(
                    tool.span(),
                    format!(
                        "step `{id}` calls tool `{}` but names no agent; add `agent: NAME`",
                        tool.as_str()
                    ),
                );
                None
            }
            (Some(tool), None, None, Some(agent)) => {
                self.check_tool(&id, agent, tool, s, node, ids, inputs, fan_out, &mut needs);
                Some(Action::Tool {
                    agent: agent.as_str().to_string(),
                    tool: tool.as_str().to_string(),
                })
            }
            (None, Some(_), Some(_), Some(agent)) => {
                self.at(
                    agent.span(),
                    format!("step `{id}` has both `agent` and `route: auto`; keep one"),
                );
                None
            }
            (None, Some(p), route, agent) => {
                if route.is_none() && agent.is_none() {
                    self.at(
                        p.span(),
                        format!(
                            "step `{id}` has a prompt but nobody to ask; add `agent: NAME` or `route: auto`"
                        ),
                    );
                }
                if let Some(a) = agent
                    && !self.agents.specialists.contains(a.as_str())
                {
                    let known: Vec<&str> = self.agents.specialists.iter().map(String::as_str).collect();
                    self.at(
                        a.span(),
                        format!(
                            "step `{id}` asks `{}`, which is not a specialist with `ask`; the specialists are: {}",
                            a.as_str(),
                            known.join(", ")
                        ),
                    );
                }
                if !s.with.is_empty() {
                    let w = node.and_then(|n| child(n, "with"));
                    self.at_node(w, &here, format!("step `{id}` asks a prompt, which takes no `with`; put the values in the prompt template"));
                }
                needs.extend(self.template_refs(p.as_str(), p.span(), ids, inputs, fan_out));
                Some(Action::Ask {
                    agent: agent.as_ref().map(|a| a.as_str().to_string()),
                    prompt: p.as_str().to_string(),
                })
            }
            (None, None, _, _) => {
                self.at(&here, format!("step `{id}` does nothing: give it `tool` (with `agent`), or `prompt` (with `agent` or `route: auto`)"));
                None
            }
        };

        for n in &s.needs {
            match ids.get(n.as_str()) {
                Some(&j) if j == index => {
                    self.at(n.span(), format!("step `{id}` needs itself"));
                }
                Some(&j) => {
                    needs.insert(j);
                }
                None => self.at(n.span(), unknown_step(n.as_str(), ids)),
            }
        }
        let mut when = None;
        if let Some(w) = &s.when {
            let expr = template::strip_braces(w.as_str());
            needs.extend(self.expression_refs(expr, w.span(), ids, inputs, false));
            when = Some(expr.to_string());
        }
        let mut for_each = None;
        if let Some(f) = &s.for_each {
            let expr = template::strip_braces(f.as_str());
            needs.extend(self.expression_refs(expr, f.span(), ids, inputs, false));
            for_each = Some(expr.to_string());
        }
        needs.remove(&index);

        let (mut attempts, mut backoff) = (1, DEFAULT_BACKOFF);
        if let Some(r) = &s.retry {
            attempts = r.attempts;
            if r.attempts == 0 {
                self.at_node(
                    node.and_then(|n| child(n, "retry")),
                    &here,
                    format!(
                        "step `{id}`: `retry.attempts` counts the first attempt too, so it must be at least 1"
                    ),
                );
            }
            if let Some(b) = &r.backoff {
                match parse_duration(b.as_str()) {
                    Ok(d) => backoff = d,
                    Err(e) => self.at(b.span(), format!("step `{id}`: retry backoff {e}")),
                }
            }
        }
        let timeout = s.timeout.as_ref().and_then(|t| match parse_duration(t.as_str()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.at(t.span(), format!("step `{id}`: timeout {e}"));
                None
            }
        });
        if let Some(c) = &s.min_confidence
            && !(0.0..=1.0).contains(&**c)
        {
            self.at(
                c.span(),
                format!("step `{id}`: min_confidence must be between 0 and 1, not {}", **c),
            );
        }
        if s.max_tokens == Some(0) {
            self.at(&here, format!("step `{id}`: max_tokens must be at least 1"));
        }
        if self.problems.len() > before {
            return None;
        }
        let with = node
            .and_then(|n| child(n, "with"))
            .map(node_to_json)
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        Some(Step {
            id,
            action: action?,
            with,
            needs: needs.into_iter().collect(),
            when,
            for_each,
            attempts,
            backoff,
            timeout,
            min_confidence: s.min_confidence.as_ref().map(|c| **c),
            max_tokens: s.max_tokens,
        })
    }

    /// Checks a tool step's agent, tool and arguments; adds the steps its
    /// templates read to `needs`.
    #[allow(clippy::too_many_arguments)]
    fn check_tool(
        &mut self,
        id: &str,
        agent: &Spanned<String>,
        tool: &Spanned<String>,
        s: &StepSpec,
        node: Option<&Node>,
        ids: &BTreeMap<String, usize>,
        inputs: &BTreeMap<String, Input>,
        fan_out: bool,
        needs: &mut BTreeSet<usize>,
    ) {
        let with_node = node.and_then(|n| child(n, "with"));
        // Templates in the arguments.
        if let Some(w) = with_node {
            for (text, span) in strings_in(w) {
                needs.extend(self.template_refs(&text, &span, ids, inputs, fan_out));
            }
        }
        let Some(tools) = self.agents.tools.get(agent.as_str()) else {
            let known: Vec<&str> = self.agents.tools.keys().map(String::as_str).collect();
            self.at(
                agent.span(),
                format!(
                    "step `{id}`: no agent called `{}` is registered; the agents are: {}",
                    agent.as_str(),
                    known.join(", ")
                ),
            );
            return;
        };
        let Some(tools) = tools else {
            // Another MCP server: its tools are known once connected.
            return;
        };
        let Some(schema) = tools.get(tool.as_str()) else {
            let known: Vec<&str> = tools.keys().map(String::as_str).collect();
            self.at(
                tool.span(),
                format!(
                    "step `{id}`: agent `{}` has no tool `{}`; its tools are: {}",
                    agent.as_str(),
                    tool.as_str(),
                    known.join(", ")
                ),
            );
            return;
        };
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let takes: Vec<&str> = properties.keys().map(String::as_str).collect();
        let here = *s.id.span();
        for (name, value) in &s.with {
            let value_node = with_node.and_then(|w| child(w, name));
            let Some(prop) = properties.get(name) else {
                self.at_node(
                    with_node.and_then(|w| key_node(w, name)),
                    &here,
                    format!(
                        "step `{id}`: `{}` takes no argument `{name}`; it takes: {}",
                        tool.as_str(),
                        takes.join(", ")
                    ),
                );
                continue;
            };
            // A literal (not a template) must have the declared type.
            let literal = value_node.map(node_to_json).unwrap_or_else(|| value.clone());
            if !contains_template(&literal)
                && let Some(expected) = declared_types(prop)
                && !expected.iter().any(|t| json_type_matches(t, &literal))
            {
                self.at_node(
                    value_node,
                    &here,
                    format!(
                        "step `{id}`: argument `{name}` of `{}` must be {}, not {}",
                        tool.as_str(),
                        expected.join(" or "),
                        json_type_name(&literal)
                    ),
                );
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !s.with.contains_key(r) {
                    self.at_node(
                        with_node,
                        &here,
                        format!(
                            "step `{id}`: `{}` needs the argument `{r}`; add it under `with:`",
                            tool.as_str()
                        ),
                    );
                }
            }
        }
    }

    /// Checks the references of a template; returns the steps it reads.
    fn template_refs(
        &mut self,
        text: &str,
        span: &Span,
        ids: &BTreeMap<String, usize>,
        inputs: &BTreeMap<String, Input>,
        fan_out: bool,
    ) -> BTreeSet<usize> {
        match template::template_variables(text) {
            Ok(vars) => self.resolve(vars, span, ids, inputs, fan_out),
            Err(e) => {
                self.at(span, format!("template: {e}"));
                BTreeSet::new()
            }
        }
    }

    /// Checks the references of an expression (`when`, `for_each`).
    fn expression_refs(
        &mut self,
        expr: &str,
        span: &Span,
        ids: &BTreeMap<String, usize>,
        inputs: &BTreeMap<String, Input>,
        fan_out: bool,
    ) -> BTreeSet<usize> {
        match template::expression_variables(expr) {
            Ok(vars) => self.resolve(vars, span, ids, inputs, fan_out),
            Err(e) => {
                self.at(span, format!("expression: {e}"));
                BTreeSet::new()
            }
        }
    }

    fn resolve(
        &mut self,
        vars: BTreeSet<String>,
        span: &Span,
        ids: &BTreeMap<String, usize>,
        inputs: &BTreeMap<String, Input>,
        fan_out: bool,
    ) -> BTreeSet<usize> {
        let mut steps = BTreeSet::new();
        for var in vars {
            let mut parts = var.split('.');
            match (parts.next(), parts.next()) {
                (Some("inputs"), Some(name)) => {
                    if !inputs.contains_key(name) {
                        let known: Vec<&str> = inputs.keys().map(String::as_str).collect();
                        self.at(
                            span,
                            format!(
                                "unknown input `{name}`; the inputs are: {}",
                                if known.is_empty() { "(none declared)".into() } else { known.join(", ") }
                            ),
                        );
                    }
                }
                (Some("steps"), Some(step)) => match ids.get(step) {
                    Some(&i) => {
                        steps.insert(i);
                    }
                    None => self.at(span, unknown_step(step, ids)),
                },
                (Some("inputs" | "steps"), None) => self.at(
                    span,
                    format!("`{var}` alone says nothing; write {var}.NAME (for example {var}.{})", if var == "inputs" { "text" } else { "ID.output" }),
                ),
                (Some("item" | "index"), _) if !fan_out => self.at(
                    span,
                    format!("`{}` exists only in a step with `for_each`", var.split('.').next().unwrap_or("item")),
                ),
                (Some("item" | "index"), _) => {}
                _ => self.at(
                    span,
                    format!(
                        "unknown name `{var}`; templates read inputs.NAME, steps.ID.output, and in a fan-out item and index"
                    ),
                ),
            }
        }
        steps
    }
}

fn unknown_step(name: &str, ids: &BTreeMap<String, usize>) -> String {
    let known: Vec<&str> = ids.keys().map(String::as_str).collect();
    format!("unknown step `{name}`; the steps are: {}", known.join(", "))
}

/// The steps of a cycle through `members`, each needing the next, from
/// the first member in the spec.
fn cycle_order(steps: &[Step], members: &BTreeSet<usize>) -> Vec<usize> {
    let start = *members.iter().next().expect("a cycle has members");
    let mut order = vec![start];
    let mut at = start;
    while let Some(&next) = steps[at]
        .needs
        .iter()
        .find(|n| members.contains(n) && !order.contains(n))
    {
        order.push(next);
        at = next;
    }
    order
}

/// The value of `key` in a mapping node.
fn child<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    node.as_mapping().and_then(|m| m.get_node(key))
}

/// The key node `key` in a mapping (to point at a wrong name).
fn key_node<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    let _ = node.as_mapping()?.iter().find(|(k, _)| k.as_str() == key)?;
    child(node, key)
}

/// Every string scalar under `node`, with its span.
fn strings_in(node: &Node) -> Vec<(String, Span)> {
    match node {
        Node::Scalar(s) => vec![(s.as_str().to_string(), *s.span())],
        Node::Sequence(seq) => seq.iter().flat_map(strings_in).collect(),
        Node::Mapping(map) => map.values().flat_map(strings_in).collect(),
    }
}

fn contains_template(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("{{") || s.contains("{%"),
        Value::Array(a) => a.iter().any(contains_template),
        Value::Object(o) => o.values().any(contains_template),
        _ => false,
    }
}

/// The JSON types a schema property allows, when it says.
fn declared_types(prop: &Value) -> Option<Vec<String>> {
    match prop.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).map(String::from).collect()),
        _ => None,
    }
}

fn json_type_matches(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> Agents {
        let specs = triage_agents::builtin(&triage_models::Catalog::builtin()).unwrap();
        let registry = crate::registry::Registry::load(None, &specs).unwrap();
        let mut agents = Agents::from_registry(&registry);
        // Another MCP server: tools unknown until connected.
        agents.tools.insert("everything".into(), None);
        agents
    }

    fn check(yaml: &str) -> Result<Plan, String> {
        Plan::parse(Path::new("wf.yaml"), yaml, &agents()).map_err(|e| e.to_string())
    }

    /// The one problem in `yaml`, as `LINE:COL: message`.
    fn problem(yaml: &str) -> String {
        let e = check(yaml).expect_err("the spec is invalid");
        assert_eq!(e.lines().count(), 1, "one problem expected: {e}");
        e.strip_prefix("wf.yaml:").unwrap().to_string()
    }

    const HEAD: &str = "name: t\nversion: '1'\ninputs:\n  text: { type: string }\nsteps:\n";

    #[test]
    fn a_valid_spec_becomes_a_plan_in_dependency_order() {
        let plan = check(&format!(
            "{HEAD}  - id: summary\n    agent: general\n    prompt: 'Sum up {{{{ steps.clauses.output }}}}'\n  - id: clauses\n    agent: legal\n    tool: classify_clauses\n    with:\n      text: '{{{{ inputs.text }}}}'\n  - id: mood\n    route: auto\n    prompt: 'How does {{{{ inputs.text }}}} feel?'\n    needs: [clauses]\n    timeout: 30s\n    retry: {{ attempts: 3, backoff: 100ms }}\noutputs:\n  summary: '{{{{ steps.summary.output.answer }}}}'\n"
        ))
        .unwrap();
        let pos = |id: &str| plan.order.iter().position(|&i| plan.steps[i].id == id).unwrap();
        assert!(pos("clauses") < pos("summary"));
        assert!(pos("clauses") < pos("mood"));
        let mood = &plan.steps[plan.step_index("mood").unwrap()];
        assert_eq!(
            (mood.attempts, mood.backoff, mood.timeout),
            (3, Duration::from_millis(100), Some(Duration::from_secs(30)))
        );
        assert_eq!(
            mood.action,
            Action::Ask {
                agent: None,
                prompt: "How does {{ inputs.text }} feel?".into()
            }
        );
    }

    #[test]
    fn yaml_syntax_errors_have_a_position() {
        let e = problem("name: t\nsteps: [\n  - id: a\n");
        assert!(e.contains("YAML syntax"), "{e}");
        let e = problem("name: t\nname: u\nversion: '1'\nsteps: []\n");
        assert!(e.starts_with("2:1: `name` is given twice"), "{e}");
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: legal\n    tool: split_clauses\n    whith: {{}}\n"
        ));
        assert!(e.starts_with("9:5: unknown field `whith`"), "{e}");
        let e = problem("name: t\nsteps:\n  - id: a\n    route: auto\n    prompt: hi\n");
        assert!(e.contains("missing field `version`"), "{e}");
    }

    #[test]
    fn a_step_must_say_what_it_does() {
        let e = problem(&format!("{HEAD}  - id: a\n"));
        assert!(e.starts_with("6:9: step `a` does nothing"), "{e}");
        let e = problem(&format!("{HEAD}  - id: a\n    tool: split_clauses\n"));
        assert!(e.contains("names no agent; add `agent: NAME`"), "{e}");
        let e = problem(&format!("{HEAD}  - id: a\n    prompt: hi\n"));
        assert!(
            e.contains("nobody to ask; add `agent: NAME` or `route: auto`"),
            "{e}"
        );
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: legal\n    tool: split_clauses\n    prompt: hi\n"
        ));
        assert!(e.contains("has both `tool` and `prompt`"), "{e}");
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: legal\n    route: auto\n    prompt: hi\n"
        ));
        assert!(e.contains("has both `agent` and `route: auto`"), "{e}");
    }

    #[test]
    fn unknown_steps_in_needs_and_templates_are_errors() {
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: hi\n    needs: [b]\n"
        ));
        assert_eq!(e, "9:13: unknown step `b`; the steps are: a");
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: '{{{{ steps.nope.output }}}}'\n"
        ));
        assert_eq!(e, "8:13: unknown step `nope`; the steps are: a");
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: '{{{{ inputs.txt }}}}'\n"
        ));
        assert!(e.contains("unknown input `txt`; the inputs are: text"), "{e}");
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: '{{{{ item }}}}'\n"
        ));
        assert!(e.contains("`item` exists only in a step with `for_each`"), "{e}");
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: '{{{{ inputs.text '\n"
        ));
        assert!(e.starts_with("8:13: template:"), "{e}");
    }

    #[test]
    fn cycles_name_the_steps_on_them() {
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: '{{{{ steps.c.output }}}}'\n  - id: b\n    route: auto\n    prompt: '{{{{ steps.a.output }}}}'\n  - id: c\n    route: auto\n    prompt: x\n    needs: [b]\n  - id: d\n    route: auto\n    prompt: '{{{{ steps.a.output }}}}'\n"
        ));
        assert_eq!(
            e,
            "6:9: the steps a → c → b → a form a cycle (each needs the next); a step cannot need itself, directly or through others"
        );
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: x\n    needs: [a]\n"
        ));
        assert!(e.contains("step `a` needs itself"), "{e}");
    }

    #[test]
    fn agents_tools_and_arguments_are_checked_against_the_registry() {
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: lawyer\n    tool: split_clauses\n"
        ));
        assert!(
            e.starts_with("7:12: step `a`: no agent called `lawyer` is registered; the agents are:"),
            "{e}"
        );
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: legal\n    tool: sentiment\n    with: {{ text: hi }}\n"
        ));
        assert!(
            e.starts_with("8:11: step `a`: agent `legal` has no tool `sentiment`; its tools are:"),
            "{e}"
        );
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: legal\n    tool: split_clauses\n    with:\n      text: hi\n      txt: hi\n"
        ));
        assert!(
            e.contains("`split_clauses` takes no argument `txt`; it takes: text"),
            "{e}"
        );
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: finance\n    tool: sentiment\n    with: {{}}\n"
        ));
        assert!(
            e.contains("`sentiment` needs the argument `text`; add it under `with:`"),
            "{e}"
        );
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: legal\n    tool: split_clauses\n    with:\n      text: [1, 2]\n"
        ));
        assert!(
            e.starts_with("10:13: step `a`: argument `text` of `split_clauses` must be string, not a list"),
            "{e}"
        );
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: legal\n    prompt: hi\n    with: {{ x: 1 }}\n"
        ));
        assert!(e.contains("takes no `with`"), "{e}");
        // Another MCP server's tools are known only once it is connected.
        check(&format!(
            "{HEAD}  - id: a\n    agent: everything\n    tool: echo\n    with: {{ message: hi }}\n"
        ))
        .unwrap();
        let e = problem(&format!(
            "{HEAD}  - id: a\n    agent: everything\n    prompt: hi\n"
        ));
        assert!(e.contains("not a specialist with `ask`"), "{e}");
    }

    #[test]
    fn settings_out_of_range_are_errors() {
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: x\n    timeout: 30\n"
        ));
        assert!(e.contains("timeout `30` has no unit"), "{e}");
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: x\n    min_confidence: 1.5\n"
        ));
        assert!(e.contains("min_confidence must be between 0 and 1"), "{e}");
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: x\n    retry: {{ attempts: 0 }}\n"
        ));
        assert!(e.contains("must be at least 1"), "{e}");
        let e = problem(&format!(
            "{HEAD}  - id: a\n    route: auto\n    prompt: x\n  - id: a\n    route: auto\n    prompt: y\n"
        ));
        assert!(e.starts_with("9:9: there are two steps called `a`"), "{e}");
        let e = problem(
            "name: t\nversion: '1'\ninputs:\n  n: { type: integer, default: many }\nsteps:\n  - id: a\n    route: auto\n    prompt: x\n",
        );
        assert!(e.contains("the default of input `n` is not a integer"), "{e}");
        let e = problem("name: t\nversion: '1'\nsteps: []\n");
        assert!(e.contains("has no steps"), "{e}");
    }
}
