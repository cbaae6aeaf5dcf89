//! A specialist as an MCP server (rmcp): the generic `ask` tool plus its
//! domain's deterministic tools, with structured output (an `outputSchema`
//! and `structuredContent`) that is also readable as text.

use std::sync::Arc;
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult,
    ListResourcesResult, PaginatedRequestParams, ProgressNotificationParam, Prompt as McpPrompt,
    PromptArgument, PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, Role, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use triage_runtime::{GenerateParams, Generation, LlmHandle, Prompt, StreamEvent};
use triage_tools::{code, finance, legal};

use crate::confidence::{self, AnswerChecks};
use crate::labels::{LabelClassifier, LabelScore};
use crate::{AgentSpec, ModelCard};

/// Input of the `ask` tool.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct AskParams {
    /// The question or task, in plain language.
    pub question: String,
    /// Longest answer in tokens (default 256).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature; 0 or absent means greedy (the same question
    /// gives the same answer).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Seed of the sampler, for reproducible samples.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// What every tool that generates text reports about the generation.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct GenerationReport {
    /// How sure the answer deserves to be, 0 to 1: the model's probability
    /// for the answer (its final number's tokens where it works one out,
    /// else the geometric mean over all tokens), lowered when the answer
    /// was cut off or its arithmetic is wrong (see `checks`).
    pub confidence: f64,
    /// What the confidence was made of.
    pub checks: AnswerChecks,
    /// Why generation ended: `eos`, `max_tokens`, `stop`, `context`.
    pub finish_reason: String,
    pub agent: String,
    pub agent_version: String,
    pub model: String,
    pub prompt_tokens: usize,
    pub tokens: usize,
    pub latency_ms: f64,
}

/// The specialist's answer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct AskResult {
    pub answer: String,
    #[serde(flatten)]
    pub generation: GenerationReport,
}

/// Input of the `sentiment` tool.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct SentimentParams {
    /// A financial sentence or short passage (news, report, analyst note).
    pub text: String,
}

/// The sentiment of a financial text.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct SentimentResult {
    /// `positive`, `negative` or `neutral`.
    pub label: String,
    /// Probability of `label` under the combined cue and similarity model,
    /// 0 to 1.
    pub confidence: f64,
    /// Every label with its probability and evidence, best first.
    pub scores: Vec<LabelScore>,
    pub agent: String,
    pub agent_version: String,
    /// The sentence encoder that compared the text with the examples.
    pub model: String,
    pub latency_ms: f64,
}

/// Input of the `classify_clauses` tool.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ClassifyClausesParams {
    /// A contract or an excerpt of one.
    pub text: String,
    /// Split the text into clauses first (default true); false labels the
    /// whole text as one clause.
    #[serde(default)]
    pub split: Option<bool>,
}

/// A runner-up label.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct Alternative {
    pub label: String,
    pub probability: f64,
}

/// A clause with its type.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct LabelledClause {
    pub number: Option<String>,
    pub heading: Option<String>,
    pub text: String,
    /// Byte offsets of the clause in the input.
    pub start: usize,
    pub end: usize,
    /// One of the 16 CUAD categories, `Confidentiality`,
    /// `Indemnification`, `Payment Terms` or `Other`.
    pub label: String,
    /// Probability of `label`, 0 to 1.
    pub confidence: f64,
    /// The next most likely types.
    pub alternatives: Vec<Alternative>,
    /// Cue phrases that supported `label`.
    pub cues: Vec<String>,
}

/// Result of `classify_clauses`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ClassifiedClauses {
    pub clauses: Vec<LabelledClause>,
    pub agent: String,
    pub agent_version: String,
    pub model: String,
    pub latency_ms: f64,
}

/// Input of the `explain` tool.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ExplainParams {
    /// The code to explain.
    pub code: String,
    /// Its language; detected when absent.
    #[serde(default)]
    pub language: Option<String>,
    /// Longest explanation in tokens (default 200).
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

/// What a piece of code does, in words.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct Explanation {
    pub explanation: String,
    pub language: String,
    /// Size and complexity, measured by code.
    pub metrics: code::CodeMetrics,
    #[serde(flatten)]
    pub generation: GenerationReport,
}

/// Result of `review`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct ReviewResult {
    pub language: String,
    /// Likely bugs and risky patterns, in line order.
    pub findings: Vec<code::Finding>,
    /// Counts by severity, in a sentence.
    pub summary: String,
    pub agent: String,
    pub agent_version: String,
    pub latency_ms: f64,
}

/// One specialist served over MCP.
#[derive(Debug, Clone)]
pub struct SpecialistServer {
    spec: Arc<AgentSpec>,
    llm: LlmHandle,
    labels: Option<(LabelClassifier, String)>,
    card: Option<Arc<ModelCard>>,
    tool_router: ToolRouter<Self>,
}

/// The label set a tool classifies with, if it is a label tool.
pub fn label_set_for_tool(tool: &str) -> Option<&'static str> {
    match tool {
        "sentiment" => Some("sentiment"),
        "classify_clauses" => Some("clause-types"),
        _ => None,
    }
}

#[tool_router(router = tool_router)]
impl SpecialistServer {
    /// A server for `spec`, answering with `llm`. It serves the tools the
    /// spec lists that this build implements.
    pub fn new(spec: AgentSpec, llm: LlmHandle) -> SpecialistServer {
        let mut tool_router = Self::tool_router();
        let all: Vec<String> = tool_router
            .list_all()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        for name in all {
            if !spec.tools.contains(&name) {
                tool_router.remove_route(&name);
            }
        }
        for name in &spec.tools {
            if !tool_router.has_route(name) {
                tracing::warn!(agent = %spec.name, tool = %name, "tool listed in the spec is not implemented yet");
            }
        }
        SpecialistServer {
            spec: Arc::new(spec),
            llm,
            labels: None,
            card: None,
            tool_router,
        }
    }

    /// The tools a server for `spec` offers, with their input and output
    /// schemas, without starting one (for checking workflows before they
    /// run).
    pub fn tools_for(spec: &AgentSpec) -> Vec<rmcp::model::Tool> {
        Self::tool_router()
            .list_all()
            .into_iter()
            .filter(|t| spec.tools.iter().any(|n| n == t.name.as_ref()))
            .collect()
    }

    /// The label classifier for this specialist's label tool (`sentiment`
    /// or `classify_clauses`), and the catalog name of its encoder.
    pub fn with_labels(mut self, classifier: LabelClassifier, encoder: &str) -> SpecialistServer {
        self.labels = Some((classifier, encoder.to_string()));
        self
    }

    /// The model card served as `triage://agents/NAME/model-card`.
    pub fn with_card(mut self, card: ModelCard) -> SpecialistServer {
        self.card = Some(Arc::new(card));
        self
    }

    fn card_uri(&self) -> String {
        format!("triage://agents/{}/model-card", self.spec.name)
    }

    /// The prompt templates the specialist uses, by name: `ask` for all,
    /// `explain` for the code specialist.
    fn prompts(&self) -> Vec<McpPrompt> {
        let mut prompts = vec![McpPrompt::new(
            "ask",
            Some(format!(
                "Ask the {} specialist; its system prompt framing your question.",
                self.spec.name
            )),
            Some(vec![
                PromptArgument::new("question")
                    .with_description("The question or task")
                    .with_required(true),
            ]),
        )];
        if self.spec.tools.iter().any(|t| t == "explain") {
            prompts.push(McpPrompt::new(
                "explain",
                Some("Explain a piece of code in plain words (the `explain` tool's prompt)."),
                Some(vec![
                    PromptArgument::new("code")
                        .with_description("The code")
                        .with_required(true),
                    PromptArgument::new("language")
                        .with_description("Its language, e.g. python")
                        .with_required(false),
                ]),
            ));
        }
        prompts
    }

    /// The report on a finished generation that began at `start`.
    fn report(&self, g: &Generation, start: Instant) -> GenerationReport {
        let (confidence, mut checks) = confidence::assess(g);
        checks.fluency = round3(checks.fluency);
        checks.answer_probability = checks.answer_probability.map(round3);
        GenerationReport {
            confidence: round3(confidence),
            checks,
            finish_reason: serde_json::to_value(g.finish_reason)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            agent: self.spec.name.clone(),
            agent_version: self.spec.version.clone(),
            model: self.spec.model.clone(),
            prompt_tokens: g.stats.prompt_tokens,
            tokens: g.stats.generated_tokens,
            latency_ms: round3(start.elapsed().as_secs_f64() * 1e3),
        }
    }

    fn classifier(&self) -> Result<&(LabelClassifier, String), String> {
        self.labels
            .as_ref()
            .ok_or_else(|| "this server was started without its label classifier".to_string())
    }

    /// Generates with progress notifications (when the caller asked for
    /// them with a progress token) and stops when the request is cancelled.
    async fn generate_reporting(
        &self,
        prompt: Prompt,
        params: GenerateParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Generation, String> {
        let mut events = self.llm.generate_stream(prompt, params.clone());
        let token = ctx.meta.get_progress_token();
        let mut made = 0usize;
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                () = ctx.ct.cancelled() => {
                    // Dropping the receiver stops the generation at its next token.
                    drop(events);
                    return Err("cancelled by the client".into());
                }
            };
            match event {
                Some(StreamEvent::Token(_)) => {
                    made += 1;
                    if let Some(token) = &token
                        && (made == 1 || made.is_multiple_of(8))
                    {
                        let mut p = ProgressNotificationParam::new(token.clone(), made as f64);
                        p.total = Some(params.max_tokens as f64);
                        p.message = Some(format!("{made} tokens generated"));
                        let _ = ctx.peer.notify_progress(p).await;
                    }
                }
                Some(StreamEvent::Text(_)) => {}
                Some(StreamEvent::Done(g)) => return Ok(*g),
                Some(StreamEvent::Failed(e)) => return Err(e),
                None => return Err("the model worker stopped".into()),
            }
        }
    }

    /// The specialist's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Names of the tools this server offers.
    pub fn tool_names(&self) -> Vec<String> {
        self.tool_router
            .list_all()
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    }

    #[tool(
        description = "Ask the specialist a question in its domain; returns the answer with a confidence."
    )]
    async fn ask(
        &self,
        Parameters(p): Parameters<AskParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<AskResult>, String> {
        if p.question.trim().is_empty() {
            return Err("`question` is empty: send the question or task as text".into());
        }
        let defaults = GenerateParams::default();
        let params = GenerateParams {
            max_tokens: p.max_tokens.unwrap_or(256),
            temperature: p.temperature.unwrap_or(0.0),
            top_p: p.temperature.filter(|&t| t > 0.0).map(|_| 0.95),
            seed: p.seed.unwrap_or(defaults.seed),
            ..defaults
        };
        params.validate().map_err(|e| e.to_string())?;
        let start = Instant::now();
        let prompt = Prompt::chat(Some(&self.spec.system_prompt), &p.question);
        let g = self.generate_reporting(prompt, params, &ctx).await?;
        Ok(Json(AskResult {
            answer: g.text.trim().to_string(),
            generation: self.report(&g, start),
        }))
    }

    #[tool(
        description = "Name the programming language of a piece of code, with a confidence and the evidence."
    )]
    async fn detect_language(
        &self,
        Parameters(p): Parameters<code::DetectLanguageParams>,
    ) -> Json<code::DetectedLanguage> {
        Json(code::detect_language(&p))
    }

    #[tool(description = "Measure code: lines, comments, functions, cyclomatic complexity, nesting.")]
    async fn code_metrics(
        &self,
        Parameters(p): Parameters<code::CodeMetricsParams>,
    ) -> Json<code::CodeMetrics> {
        Json(code::code_metrics(&p))
    }

    #[tool(
        description = "Find sums of money (with currency and scale), percentages, basis points and reporting periods in text."
    )]
    async fn extract_amounts(
        &self,
        Parameters(p): Parameters<finance::ExtractAmountsParams>,
    ) -> Json<finance::ExtractedAmounts> {
        Json(finance::extract_amounts(&p))
    }

    #[tool(
        description = "Screen a transaction against the account's history for fraud signals (amount outlier, velocity, new payee, country mismatch, odd hour, round amount), each with a score and a reason."
    )]
    async fn screen_transaction(
        &self,
        Parameters(p): Parameters<finance::ScreenTransactionParams>,
    ) -> Result<Json<finance::Screening>, String> {
        finance::screen_transaction(&p)
            .map(Json)
            .map_err(|e| e.to_string())
    }

    #[tool(
        description = "Split a contract into its clauses: numbered sections, lettered sub-clauses, paragraphs."
    )]
    async fn split_clauses(&self, Parameters(p): Parameters<legal::ContractText>) -> Json<legal::Clauses> {
        Json(legal::split_clauses(&p))
    }

    #[tool(
        description = "Extract the parties (with their roles), dates, durations and notice periods of a contract."
    )]
    async fn extract_terms(&self, Parameters(p): Parameters<legal::ContractText>) -> Json<legal::Terms> {
        Json(legal::extract_terms(&p))
    }

    #[tool(
        description = "Sentiment of a financial sentence (positive, negative or neutral) with a confidence and the evidence for each label."
    )]
    async fn sentiment(
        &self,
        Parameters(p): Parameters<SentimentParams>,
    ) -> Result<Json<SentimentResult>, String> {
        if p.text.trim().is_empty() {
            return Err("`text` is empty: send the sentence to classify".into());
        }
        let (classifier, encoder) = self.classifier()?;
        let start = Instant::now();
        let d = classifier
            .classify(vec![p.text])
            .await
            .map_err(|e| e.to_string())?
            .remove(0);
        Ok(Json(SentimentResult {
            label: d.label,
            confidence: d.confidence,
            scores: d.scores,
            agent: self.spec.name.clone(),
            agent_version: self.spec.version.clone(),
            model: encoder.clone(),
            latency_ms: round3(start.elapsed().as_secs_f64() * 1e3),
        }))
    }

    #[tool(
        description = "Split a contract into clauses and label each with its type (the 16 CUAD categories, Confidentiality, Indemnification, Payment Terms or Other) and a confidence."
    )]
    async fn classify_clauses(
        &self,
        Parameters(p): Parameters<ClassifyClausesParams>,
    ) -> Result<Json<ClassifiedClauses>, String> {
        if p.text.trim().is_empty() {
            return Err("`text` is empty: send the contract or clause to classify".into());
        }
        let (classifier, encoder) = self.classifier()?;
        let start = Instant::now();
        let clauses = if p.split.unwrap_or(true) {
            legal::split_clauses(&legal::ContractText { text: p.text.clone() }).clauses
        } else {
            Vec::new()
        };
        let clauses = if clauses.is_empty() {
            vec![legal::Clause {
                number: None,
                heading: None,
                text: p.text.trim().to_string(),
                level: 1,
                start: 0,
                end: p.text.len(),
            }]
        } else {
            clauses
        };
        // The heading is part of what a clause is about.
        let texts: Vec<String> = clauses
            .iter()
            .map(|c| match &c.heading {
                Some(h) => format!("{h}. {}", c.text),
                None => c.text.clone(),
            })
            .collect();
        let decisions = classifier.classify(texts).await.map_err(|e| e.to_string())?;
        let clauses = clauses
            .into_iter()
            .zip(decisions)
            .map(|(c, d)| LabelledClause {
                number: c.number,
                heading: c.heading,
                text: c.text,
                start: c.start,
                end: c.end,
                cues: d.scores[0].cues.clone(),
                alternatives: d.scores[1..]
                    .iter()
                    .take(2)
                    .map(|s| Alternative {
                        label: s.label.clone(),
                        probability: s.probability,
                    })
                    .collect(),
                label: d.label,
                confidence: d.confidence,
            })
            .collect();
        Ok(Json(ClassifiedClauses {
            clauses,
            agent: self.spec.name.clone(),
            agent_version: self.spec.version.clone(),
            model: encoder.clone(),
            latency_ms: round3(start.elapsed().as_secs_f64() * 1e3),
        }))
    }

    #[tool(
        description = "Explain what a piece of code does, in plain words, with its language and size measured."
    )]
    async fn explain(
        &self,
        Parameters(p): Parameters<ExplainParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Explanation>, String> {
        if p.code.trim().is_empty() {
            return Err("`code` is empty: send the code to explain".into());
        }
        let start = Instant::now();
        let language = match p.language.filter(|l| !l.trim().is_empty()) {
            Some(l) => l,
            None => code::detect_language(&code::DetectLanguageParams { code: p.code.clone() }).language,
        };
        let metrics = code::code_metrics(&code::CodeMetricsParams {
            code: p.code.clone(),
            language: Some(language.clone()),
        });
        let params = GenerateParams {
            max_tokens: p.max_tokens.unwrap_or(200),
            ..Default::default()
        };
        params.validate().map_err(|e| e.to_string())?;
        let question = explain_request(&p.code, &language);
        let prompt = Prompt::chat(Some(&self.spec.system_prompt), &question);
        let g = self.generate_reporting(prompt, params, &ctx).await?;
        Ok(Json(Explanation {
            explanation: g.text.trim().to_string(),
            language,
            metrics,
            generation: self.report(&g, start),
        }))
    }

    #[tool(
        description = "Review code for likely bugs and risky patterns; each finding has a line, a severity and the reason."
    )]
    async fn review(
        &self,
        Parameters(p): Parameters<code::ReviewParams>,
    ) -> Result<Json<ReviewResult>, String> {
        if p.code.trim().is_empty() {
            return Err("`code` is empty: send the code to review".into());
        }
        let start = Instant::now();
        let r = code::review_code(&p);
        let count = |s: code::Severity| r.findings.iter().filter(|f| f.severity == s).count();
        let summary = if r.findings.is_empty() {
            "No likely bugs or risky patterns found by the rules for this language.".to_string()
        } else {
            format!(
                "{} finding(s): {} error(s), {} warning(s), {} note(s).",
                r.findings.len(),
                count(code::Severity::Error),
                count(code::Severity::Warning),
                count(code::Severity::Info)
            )
        };
        Ok(Json(ReviewResult {
            language: r.language,
            findings: r.findings,
            summary,
            agent: self.spec.name.clone(),
            agent_version: self.spec.version.clone(),
            latency_ms: round3(start.elapsed().as_secs_f64() * 1e3),
        }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SpecialistServer {
    fn get_info(&self) -> ServerConfig {
        let mut info = Implementation::from_build_env();
        info.name = format!("triage-{}", self.spec.name);
        info.version = self.spec.version.clone();
        info.description = Some(self.spec.description.clone());
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(info)
        .with_instructions(format!(
            "{} Tools: {}.",
            self.spec.description,
            self.tool_names().join(", ")
        ))
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
        let args = request.arguments.unwrap_or_default();
        let arg = |name: &str| args.get(name).and_then(|v| v.as_str()).map(str::to_string);
        let missing = |name: &str| {
            McpError::invalid_params(
                format!("prompt `{}` needs the argument `{name}`", request.name),
                None,
            )
        };
        let text = match request.name.as_str() {
            "ask" => {
                let q = arg("question")
                    .filter(|q| !q.trim().is_empty())
                    .ok_or_else(|| missing("question"))?;
                format!("{}\n\n{q}", self.spec.system_prompt)
            }
            "explain" if self.spec.tools.iter().any(|t| t == "explain") => {
                let code = arg("code")
                    .filter(|c| !c.trim().is_empty())
                    .ok_or_else(|| missing("code"))?;
                let language = arg("language").unwrap_or_else(|| {
                    code::detect_language(&code::DetectLanguageParams { code: code.clone() }).language
                });
                format!(
                    "{}\n\n{}",
                    self.spec.system_prompt,
                    explain_request(&code, &language)
                )
            }
            other => {
                let known: Vec<String> = self.prompts().into_iter().map(|p| p.name).collect();
                return Err(McpError::invalid_params(
                    format!("no prompt `{other}`; this specialist has: {}", known.join(", ")),
                    None,
                ));
            }
        };
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                .with_description(format!("{} specialist, {}", self.spec.name, request.name))
                .into(),
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let resources = match &self.card {
            Some(_) => vec![
                Resource::new(self.card_uri(), format!("{}-model-card", self.spec.name))
                    .with_title(format!("Model card of the {} specialist", self.spec.name))
                    .with_description("Model, version, sha256, licence, parameters and measured accuracy")
                    .with_mime_type("application/json"),
            ],
            None => Vec::new(),
        };
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        match &self.card {
            Some(card) if request.uri == self.card_uri() => {
                let text = serde_json::to_string_pretty(&**card)
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(text, request.uri).with_mime_type("application/json"),
                ])
                .into())
            }
            _ => Err(McpError::resource_not_found(
                format!(
                    "no resource `{}`; this specialist serves {}",
                    request.uri,
                    self.card_uri()
                ),
                None,
            )),
        }
    }
}

/// The user message of the `explain` tool and prompt.
fn explain_request(code: &str, language: &str) -> String {
    let shown = if language == "unknown" { "" } else { language };
    format!(
        "Explain what this {shown} code does, briefly and in plain words.\n\n```{shown}\n{}\n```",
        code.trim_end()
    )
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
