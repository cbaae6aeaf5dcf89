//! `triage embed`: sentence embeddings and their similarities.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use triage_runtime::cosine;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Texts to embed.
    #[arg(required = true)]
    texts: Vec<String>,
    /// Print the matrix of cosine similarities instead of the vectors.
    #[arg(long)]
    similarity: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(i) = args.texts.iter().position(|t| t.trim().is_empty()) {
        bail!("text {} is empty: every text to embed needs some words", i + 1);
    }
    let embedder = ctx.embedder()?;
    let vectors = embedder.embed(args.texts.clone()).await?;
    let mut out = std::io::stdout().lock();
    if args.similarity {
        let matrix: Vec<Vec<f32>> = vectors
            .iter()
            .map(|a| vectors.iter().map(|b| cosine(a, b)).collect())
            .collect();
        if args.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({ "texts": args.texts, "similarity": matrix })
            )?;
        } else {
            for (i, text) in args.texts.iter().enumerate() {
                writeln!(out, "[{}] {text}", i + 1)?;
            }
            let header: Vec<String> = std::iter::once(String::new())
                .chain((1..=matrix.len()).map(|i| format!("[{i}]")))
                .collect();
            let rows: Vec<Vec<String>> = matrix
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    std::iter::once(format!("[{}]", i + 1))
                        .chain(row.iter().map(|s| format!("{s:.3}")))
                        .collect()
                })
                .collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            super::print_table(&mut out, &header, &rows)?;
        }
    } else if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "texts": args.texts, "dim": embedder.dim(), "vectors": vectors })
        )?;
    } else {
        for v in &vectors {
            let cells: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
            writeln!(out, "{}", cells.join(" "))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
