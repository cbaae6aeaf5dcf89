//! `triage agent serve NAME...`: specialists as MCP servers, one over
//! stdio, or several over streamable HTTP at `/NAME/mcp` on one port,
//! sharing one loaded copy of each model.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use triage_agents::{AgentSpec, LabelClassifier, LabelSet, ModelCard, SpecialistServer, label_set_for_tool};
use triage_models::MINILM;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve specialists over MCP: one on stdin/stdout (logs go to
    /// stderr), or several over streamable HTTP with --http.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The specialists: legal, finance, code, general. Over stdio, exactly one.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    /// Serve streamable HTTP on this loopback address (e.g.
    /// 127.0.0.1:7301; port 0 picks a free one). Each specialist is at
    /// http://ADDR/NAME/mcp; the URLs are printed on stdout.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Folder of agent specs to use instead of the built-in specs/agents.
    #[arg(long, env = "TRIAGE_AGENTS", value_name = "DIR")]
    specs: Option<PathBuf>,
}

pub async fn run(ctx: &triage::Context, cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Serve(args) = cmd;
    let specs = match &args.specs {
        Some(dir) => triage_agents::load_dir(dir, &ctx.catalog)?,
        None => triage_agents::builtin(&ctx.catalog)?,
    };
    let mut chosen = Vec::new();
    for name in &args.names {
        let Some(spec) = specs.iter().find(|s| &s.name == name) else {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "no specialist called `{name}`; the specs define: {}",
                known.join(", ")
            );
        };
        if chosen.iter().any(|s: &AgentSpec| &s.name == name) {
            bail!("`{name}` is named twice");
        }
        chosen.push(spec.clone());
    }
    match args.http {
        None => {
            if chosen.len() != 1 {
                bail!(
                    "over stdio one process serves one specialist; run one process per specialist, or serve several with --http 127.0.0.1:PORT"
                );
            }
            serve_stdio(ctx, chosen.remove(0)).await
        }
        Some(addr) => serve_http(ctx, chosen, addr).await,
    }
}

/// Builds the servers; each model is loaded once and shared.
async fn build(ctx: &triage::Context, specs: Vec<AgentSpec>) -> anyhow::Result<Vec<SpecialistServer>> {
    let mut servers = Vec::with_capacity(specs.len());
    for spec in specs {
        // LlmHandle::shared loads each model file once per process.
        let llm = ctx.llm_named(&spec.model)?;
        let set = spec.tools.iter().find_map(|t| label_set_for_tool(t));
        let card = ModelCard::new(&spec, &ctx.catalog, MINILM);
        let mut server = SpecialistServer::new(spec, llm).with_card(card);
        if let Some(set) = set {
            // Loaded once per process and shared, like the LLM.
            let embedder = ctx.embedder()?;
            let set = LabelSet::builtin(set).with_context(|| format!("no label set `{set}`"))?;
            let mut cache = ctx.embedding_cache()?;
            let classifier = LabelClassifier::new(set, embedder, &mut cache)
                .await
                .context("embedding the labelled examples")?;
            server = server.with_labels(classifier, MINILM);
        }
        servers.push(server);
    }
    Ok(servers)
}

async fn serve_stdio(ctx: &triage::Context, spec: AgentSpec) -> anyhow::Result<ExitCode> {
    let name = spec.name.clone();
    let server = build(ctx, vec![spec]).await?.remove(0);
    tracing::info!(agent = %name, "serving over stdio");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("starting the MCP session on stdio")?;
    running.waiting().await.context("serving MCP on stdio")?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_http(
    ctx: &triage::Context,
    specs: Vec<AgentSpec>,
    addr: SocketAddr,
) -> anyhow::Result<ExitCode> {
    if !addr.ip().is_loopback() {
        bail!(
            "refusing to serve specialists on {addr}: they have no authentication, so they listen on loopback only; use 127.0.0.1:PORT (the gateway, `triage serve`, is the way in from elsewhere)"
        );
    }
    let servers = build(ctx, specs).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut router = axum::Router::new();
    let mut urls = Vec::new();
    for server in servers {
        let name = server.name().to_string();
        let config = StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        router = router.nest_service(&format!("/{name}/mcp"), service);
        urls.push(format!("{name} http://{local}/{name}/mcp"));
    }
    for url in &urls {
        println!("{url}");
    }
    tracing::info!(%local, "serving over streamable HTTP");
    let stop = shutdown.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        })
        .await
        .context("serving HTTP")?;
    Ok(ExitCode::SUCCESS)
}
