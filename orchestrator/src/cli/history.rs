//! `triage history`: the recent answers and routing decisions in the
//! store.

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;
use triage::store::Store as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Routing decisions instead of answers.
    #[arg(long)]
    routes: bool,
    /// How many, most recent last.
    #[arg(long, default_value_t = 20, value_name = "N")]
    limit: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    let store = ctx.controller_store();
    let mut out = std::io::stdout().lock();
    if args.routes {
        let routes = store.routes(args.limit)?;
        if args.json {
            writeln!(out, "{}", json!({ "routes": routes }))?;
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = routes
            .iter()
            .map(|r| {
                vec![
                    r.at.clone(),
                    r.decision.agent.clone(),
                    format!("{:.3}", r.decision.probability),
                    format!("{:?}", r.decision.stage).to_lowercase(),
                    super::shorten(&r.task, 50),
                ]
            })
            .collect();
        super::print_table(&mut out, &["AT", "AGENT", "PROBABILITY", "STAGE", "TASK"], &rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let asks = store.records("asks", args.limit)?;
    if args.json {
        writeln!(out, "{}", json!({ "asks": asks }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = asks
        .iter()
        .map(|a| {
            let path: Vec<String> = a["hops"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    format!(
                        "{}:{}",
                        h["agent"].as_str().unwrap_or("-"),
                        h["outcome"].as_str().unwrap_or("-")
                    )
                })
                .collect();
            vec![
                a["at"].as_str().unwrap_or_default().to_string(),
                a["agent"].as_str().unwrap_or_default().to_string(),
                a["confidence"].as_f64().map_or("-".into(), |c| format!("{c:.2}")),
                path.join(" → "),
                super::shorten(a["task"].as_str().unwrap_or_default(), 50),
            ]
        })
        .collect();
    super::print_table(
        &mut out,
        &["AT", "ANSWERED BY", "CONFIDENCE", "PATH", "TASK"],
        &rows,
    )?;
    Ok(ExitCode::SUCCESS)
}
