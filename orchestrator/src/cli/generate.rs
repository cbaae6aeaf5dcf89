//! `triage generate`: stream a completion from the local model.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use triage_runtime::{GenerateParams, Prompt, StreamEvent};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to ask.
    prompt: String,
    /// System prompt (default: the model's own).
    #[arg(long, short)]
    system: Option<String>,
    /// Use the prompt as raw text, without the chat template.
    #[arg(long, conflicts_with = "system")]
    raw: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f64,
    /// Sample among the k most likely tokens only.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample among the most likely tokens holding this much probability.
    #[arg(long)]
    top_p: Option<f64>,
    /// Penalty for repeating recent tokens (1.0 = none).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed for sampling (same seed, same output).
    #[arg(long, default_value_t = 299792458)]
    seed: u64,
    /// Stop before this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Print one JSON object (text, tokens, timings, mean log-prob) instead of streaming.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &triage::Context, args: Args) -> anyhow::Result<ExitCode> {
    if args.prompt.trim().is_empty() {
        bail!("the prompt is empty: pass the text to complete, e.g. triage generate \"What is a clause?\"");
    }
    let prompt = if args.raw {
        Prompt::Text(args.prompt.clone())
    } else {
        Prompt::chat(args.system.as_deref(), &args.prompt)
    };
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        stop: args.stop.clone(),
        ..Default::default()
    };
    // Refuse bad options before fetching or loading anything.
    params.validate()?;
    let llm = ctx.llm()?;
    let mut events = llm.generate_stream(prompt, params);
    let mut stdout = std::io::stdout().lock();
    // One listener for the whole generation: a Ctrl-C arriving while a
    // token is being written is still seen.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let generation = loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = &mut ctrl_c => {
                drop(events); // cancels the generation at the next token
                if !args.json { writeln!(stdout)?; }
                eprintln!("cancelled");
                return Ok(ExitCode::from(130));
            }
        };
        match event {
            Some(StreamEvent::Token(t)) if !args.json => {
                stdout.write_all(t.text.as_bytes())?;
                stdout.flush()?;
            }
            Some(StreamEvent::Text(text)) if !args.json => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            Some(StreamEvent::Token(_) | StreamEvent::Text(_)) => {}
            Some(StreamEvent::Done(g)) => break g,
            Some(StreamEvent::Failed(e)) => bail!("{e}"),
            None => bail!("the model worker stopped before finishing"),
        }
    };
    if args.json {
        let spec = ctx.catalog.get(triage_models::SMOLLM2)?;
        let value = json!({
            "model": spec.name,
            "model_version": spec.version,
            "text": generation.text,
            "finish_reason": generation.finish_reason,
            "prompt_tokens": generation.stats.prompt_tokens,
            "tokens": generation.stats.generated_tokens,
            "mean_logprob": generation.mean_logprob(),
            "timings": {
                "prompt_ms": generation.stats.prompt_ms,
                "generation_ms": generation.stats.generation_ms,
                "prompt_tokens_per_s": generation.stats.prompt_tokens_per_s,
                "generation_tokens_per_s": generation.stats.generation_tokens_per_s,
            },
        });
        writeln!(stdout, "{value}")?;
    } else {
        writeln!(stdout)?;
    }
    Ok(ExitCode::SUCCESS)
}
