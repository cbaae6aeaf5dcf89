//! `triage agent serve NAME`: one specialist as an MCP server over stdio.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use rmcp::ServiceExt;
use triage_agents::SpecialistServer;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve a specialist over MCP on stdin/stdout (logs go to stderr).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The specialist: legal, finance, code or general.
    name: String,
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
    let Some(spec) = specs.iter().find(|s| s.name == args.name).cloned() else {
        let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "no specialist called `{}`; the specs define: {}",
            args.name,
            known.join(", ")
        );
    };
    let llm = ctx.llm_named(&spec.model)?;
    tracing::info!(agent = %spec.name, "serving over stdio");
    let server = SpecialistServer::new(spec, llm)
        .serve(rmcp::transport::stdio())
        .await
        .context("starting the MCP session on stdio")?;
    server.waiting().await.context("serving MCP on stdio")?;
    Ok(ExitCode::SUCCESS)
}
