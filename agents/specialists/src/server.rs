//! A specialist as an MCP server (rmcp): the generic `ask` tool plus its
//! domain's deterministic tools, with structured output (an `outputSchema`
//! and `structuredContent`) that is also readable as text.

use std::sync::Arc;
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use triage_runtime::{GenerateParams, LlmHandle, Prompt};
use triage_tools::{code, finance, legal};

use crate::AgentSpec;

/// Input of the `ask` tool.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct AskParams {
    /// The question or task, in plain language.
    pub question: String,
    /// Longest answer in tokens (default 256).
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

/// The specialist's answer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct AskResult {
    pub answer: String,
    /// Geometric mean of the answer's token probabilities, 0 to 1: how sure
    /// the model was of the words it chose.
    pub confidence: f64,
    /// Why generation ended: `eos`, `max_tokens`, `stop`, `context`.
    pub finish_reason: String,
    pub agent: String,
    pub agent_version: String,
    pub model: String,
    pub prompt_tokens: usize,
    pub tokens: usize,
    pub latency_ms: f64,
}

/// One specialist served over MCP.
#[derive(Debug, Clone)]
pub struct SpecialistServer {
    spec: Arc<AgentSpec>,
    llm: LlmHandle,
    tool_router: ToolRouter<Self>,
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
            tool_router,
        }
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
    async fn ask(&self, Parameters(p): Parameters<AskParams>) -> Result<Json<AskResult>, String> {
        if p.question.trim().is_empty() {
            return Err("`question` is empty: send the question or task as text".into());
        }
        let params = GenerateParams {
            max_tokens: p.max_tokens.unwrap_or(256),
            ..Default::default()
        };
        params.validate().map_err(|e| e.to_string())?;
        let start = Instant::now();
        let prompt = Prompt::chat(Some(&self.spec.system_prompt), &p.question);
        let g = self
            .llm
            .generate(prompt, params)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(AskResult {
            answer: g.text.trim().to_string(),
            confidence: round3(f64::from(g.mean_logprob()).exp()),
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
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SpecialistServer {
    fn get_info(&self) -> ServerConfig {
        let mut info = Implementation::from_build_env();
        info.name = format!("triage-{}", self.spec.name);
        info.version = self.spec.version.clone();
        info.description = Some(self.spec.description.clone());
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(info)
            .with_instructions(format!(
                "{} Tools: {}.",
                self.spec.description,
                self.tool_names().join(", ")
            ))
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
