//! Command-line parsing and dispatch; one file per command under `cli/`.

mod agent;
mod agents;
mod ask;
mod bench;
mod embed;
mod eval;
mod generate;
mod history;
mod models;
mod probe;
mod run;
mod serve;
mod validate;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// triage: a team of small language models on your own machine.
#[derive(Debug, Parser)]
#[command(name = "triage", version, about, max_term_width = 100)]
struct Cli {
    /// Model catalog to use instead of the built-in specs/models.toml.
    #[arg(long, global = true, env = "TRIAGE_CATALOG", value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// Compute threads for inference (default: the number of cores).
    #[arg(long, global = true, env = "TRIAGE_THREADS", value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer a task: route it to the right specialist, check the
    /// answer's confidence, escalate when it is low.
    Ask(ask::AskArgs),
    /// Show which specialist a task would go to, and why.
    Route(ask::RouteArgs),
    /// The agents the controller can call: list, health, stats.
    #[command(subcommand)]
    Agents(agents::Command),
    /// Check workflow specs: syntax, fields, references, cycles, agents,
    /// tools and arguments, each problem with its line and column.
    Validate(validate::Args),
    /// Run a workflow spec with its inputs, recording every step durably.
    Run(run::RunArgs),
    /// Workflow runs: list, show, resume, cancel.
    #[command(subcommand)]
    Runs(run::RunsCommand),
    /// Recent answers (or, with --routes, routing decisions) from the store.
    History(history::Args),
    /// Serve the whole team as one MCP server (stdio, or streamable HTTP
    /// with --http): ask, route, run_workflow, runs, agents and every
    /// specialist tool.
    Serve(serve::ServeArgs),
    /// Run a specialist agent.
    #[command(subcommand)]
    Agent(agent::Command),
    /// Generate text with the local model, streaming it to stdout.
    Generate(generate::Args),
    /// Embed texts with MiniLM; print vectors or their cosine similarities.
    Embed(embed::Args),
    /// List, fetch and verify the models in the catalog.
    #[command(subcommand)]
    Models(models::Command),
    /// Measure performance.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Measure accuracy on labelled data.
    #[command(subcommand)]
    Eval(eval::Command),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let threads = match cli.threads {
        Some(0) => {
            eprintln!("error: --threads must be at least 1");
            return ExitCode::from(2);
        }
        Some(n) => n,
        None => std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    // The generation runtime sizes its thread team from TRIAGE_THREADS (and
    // agents started from here inherit it); candle, which runs MiniLM,
    // sizes its pools from RAYON_NUM_THREADS, and without it re-reads
    // /proc/cpuinfo on every operation.
    // SAFETY: set before any other thread is started.
    unsafe {
        std::env::set_var("TRIAGE_THREADS", threads.to_string());
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let ctx = triage::Context::new(cli.catalog.as_deref())?;
        match cli.command {
            Command::Ask(args) => ask::ask(&ctx, args).await,
            Command::Route(args) => ask::route(&ctx, args).await,
            Command::Agents(cmd) => agents::run(&ctx, cmd).await,
            Command::History(args) => history::run(&ctx, args),
            Command::Validate(args) => validate::run(&ctx, args),
            Command::Run(args) => run::run(&ctx, args).await,
            Command::Runs(cmd) => run::runs(&ctx, cmd).await,
            Command::Serve(args) => serve::run(&ctx, args).await,
            Command::Agent(cmd) => agent::run(&ctx, cmd).await,
            Command::Generate(args) => generate::run(&ctx, args).await,
            Command::Embed(args) => embed::run(&ctx, args).await,
            Command::Models(cmd) => models::run(&ctx, cmd),
            Command::Bench(cmd) => bench::run(&ctx, cmd).await,
            Command::Eval(cmd) => eval::run(&ctx, cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Output closed by the reader (`triage ... | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints a table with a header row, columns padded to their widest cell.
fn print_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// `s` on one line, cut to `n` characters with an ellipsis, for table cells.
fn shorten(s: &str, n: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}
