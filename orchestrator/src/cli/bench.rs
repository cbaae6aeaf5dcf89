//! `triage bench runtime`: load time, prompt and generation speed, memory,
//! and embedding latency, with candle's stock quantized llama measured side
//! by side on the same file for the ratios.

mod gateway;
mod workflow;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use serde_json::json;
use triage_runtime::{GenerateParams, LlmHandle, LoadOptions, Prompt};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Inference speed and memory of the local models.
    Runtime(RuntimeArgs),
    /// Routing latency for one task of about 40 tokens, models loaded.
    Router(RouterArgs),
    /// The workflow executor's overhead per step (store writes included)
    /// over a 1,000-step chain of cheap tool calls.
    Workflow(workflow::Args),
    /// The MCP gateway under load: N concurrent sessions over streamable
    /// HTTP calling a cheap tool, then `ask`; calls/s, p50, p99, errors,
    /// and no session or process left behind.
    Gateway(gateway::Args),
}

#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    /// Tasks routed; percentiles are over them.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// The task to route (default: a 40-token contract question).
    #[arg(long, value_name = "TEXT")]
    task: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The default routing task: 40 MiniLM tokens, special tokens included.
const ROUTE_TASK: &str = "Our supplier wants to end the agreement early. Can they terminate for convenience \
under clause 12 of the contract, how much written notice must they give us, and do we owe any termination \
fees?";

/// The routing latency target from the controller issue, in milliseconds.
const ROUTE_TARGET_MS: f64 = 30.0;

#[derive(Debug, clap::Args)]
pub struct RuntimeArgs {
    /// Measurement rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Prompt length for the prompt-speed and depth figures.
    #[arg(long, default_value_t = 200)]
    prompt_tokens: usize,
    /// Tokens generated per generation measurement.
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Concurrent generations for the batched-decoding figure.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Skip candle's stock quantized llama (no ratios).
    #[arg(long)]
    no_baseline: bool,
    /// Measure this GGUF file instead of the catalog's SmolLM2 (a model you
    /// bring; the MiniLM figures are the same either way).
    #[arg(long, value_name = "FILE")]
    gguf: Option<std::path::PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Text for the prompt: ordinary English prose, long enough for 200+ tokens.
const PROSE: &str = "The agreement between the parties sets out the terms under which the supplier will deliver \
software services to the customer over the next three years. Payment is due within thirty days of each invoice, \
and late payments accrue interest at two percent per month. Either party may terminate the agreement for \
convenience with ninety days of written notice, and for cause immediately if the other party materially breaches \
its obligations and fails to cure the breach within fifteen days. The supplier warrants that the services will be \
performed in a professional manner consistent with industry standards, and its total liability under the agreement \
is limited to the fees paid in the twelve months before the claim. Confidential information disclosed by either \
party must be protected with reasonable care and may only be used to perform the agreement. The agreement is \
governed by the laws of the State of New York, and any dispute will be resolved by arbitration in New York City. \
Neither party may assign the agreement without the prior written consent of the other, except to a successor in \
a merger or acquisition of substantially all of its assets. Notices must be in writing and delivered by hand, \
courier or email to the addresses listed in the schedule, and take effect on receipt.";

pub async fn run(ctx: &triage::Context, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Runtime(args) => runtime(ctx, args).await,
        Command::Router(args) => router(ctx, args).await,
        Command::Workflow(args) => workflow::run(ctx, args).await,
        Command::Gateway(args) => gateway::run(ctx, args).await,
    }
}

async fn router(ctx: &triage::Context, args: RouterArgs) -> anyhow::Result<ExitCode> {
    if args.rounds == 0 {
        anyhow::bail!("--rounds must be at least 1");
    }
    let task = args.task.clone().unwrap_or_else(|| ROUTE_TASK.to_string());
    let specs = ctx.specs(None)?;
    let start = Instant::now();
    let router = ctx
        .router(&specs, triage::router::RouterConfig::builtin(), true)
        .await?;
    let build_ms = ms(start);
    let tokens = ctx.embedder()?.token_count(&task).await?;
    let first = router.route(&task, 0).await?; // warm-up
    let mut latencies = Vec::with_capacity(args.rounds);
    let mut in_router = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        let t = Instant::now();
        let d = router.route(&task, 0).await?;
        latencies.push(ms(t));
        in_router.push(d.latency_ms);
    }
    // The encoder alone on the same task, for the share of the latency.
    let embedder = ctx.embedder()?;
    let mut embed_only = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        let t = Instant::now();
        embedder.embed(vec![task.clone()]).await?;
        embed_only.push(ms(t));
    }
    let embed_p50 = median(&embed_only);
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| triage::percentile(&latencies, q);
    let (p50, p95, p99) = (pick(0.5), pick(0.95), pick(0.99));
    // `--threads` (global) reaches the runtime through TRIAGE_THREADS.
    let threads = triage_runtime::default_threads();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "task_tokens": tokens, "rounds": args.rounds, "threads": threads,
                "routed_to": first.agent, "stage": first.stage,
                "router_build_ms": build_ms,
                "latency_ms": { "p50": p50, "p95": p95, "p99": p99 },
                "embedding_ms_p50": embed_p50,
                "target_ms": ROUTE_TARGET_MS, "p50_over_target": p50 / ROUTE_TARGET_MS,
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "routing a {tokens}-token task ({} rounds, {threads} threads): routed to {} by {:?}",
        args.rounds, first.agent, first.stage
    )?;
    let rows = vec![
        vec![
            "router start (examples from the cache)".into(),
            format!("{build_ms:.0} ms"),
            String::new(),
        ],
        vec![
            "latency p50".into(),
            format!("{p50:.1} ms"),
            format!("{:.2}× the {ROUTE_TARGET_MS} ms target", p50 / ROUTE_TARGET_MS),
        ],
        vec![
            "  of which MiniLM (p50)".into(),
            format!("{embed_p50:.1} ms"),
            String::new(),
        ],
        vec!["latency p95".into(), format!("{p95:.1} ms"), String::new()],
        vec!["latency p99".into(), format!("{p99:.1} ms"), String::new()],
    ];
    super::print_table(&mut out, &["measure", "value", "ratio"], &rows)?;
    Ok(ExitCode::SUCCESS)
}

async fn runtime(ctx: &triage::Context, args: RuntimeArgs) -> anyhow::Result<ExitCode> {
    if args.rounds == 0 || args.gen_tokens < 2 || args.prompt_tokens < 2 || args.concurrency < 2 {
        anyhow::bail!(
            "--rounds must be at least 1, --gen-tokens, --prompt-tokens and --concurrency at least 2"
        );
    }
    // `--threads` (global) reaches the runtime through TRIAGE_THREADS.
    let threads = triage_runtime::default_threads();
    let (gguf, model_name) = match &args.gguf {
        Some(path) if path.is_file() => (path.clone(), path.display().to_string()),
        Some(path) => anyhow::bail!(
            "no such GGUF file: {} (--gguf takes the path of a model file)",
            path.display()
        ),
        None => {
            let files = ctx.model_files(triage_models::SMOLLM2)?;
            (files.main_file(), files.spec.name.clone())
        }
    };
    let mini_files = ctx.model_files(triage_models::MINILM)?;
    eprintln!(
        "benchmarking {model_name} with {threads} threads, {} rounds...",
        args.rounds
    );

    // Ours: the runtime's real generation path.
    let start = Instant::now();
    let llm = LlmHandle::load(
        &gguf,
        LoadOptions {
            threads: Some(threads),
            ..Default::default()
        },
    )?;
    let load_ms = ms(start);
    let prompt = prompt_tokens(&llm, args.prompt_tokens).await?;
    // Warm-up (untimed), as llama-bench does: first-touch page faults and
    // caches are not what the figures are about.
    llm.generate(Prompt::Tokens(prompt.clone()), fixed(2)).await?;
    let mut ours = Speeds::default();
    // Every measurement starts cold: no prompt comes from the prefix cache.
    let cold = || llm.with_engine(|e| e.clear_prefix_cache());
    for _ in 0..args.rounds {
        cold().await?;
        let g = llm.generate(Prompt::Tokens(prompt.clone()), fixed(1)).await?;
        ours.prompt.push(g.stats.prompt_tokens_per_s);
        cold().await?;
        let g = llm
            .generate(Prompt::Tokens(vec![1]), fixed(args.gen_tokens))
            .await?;
        ours.gen0.push(g.stats.generation_tokens_per_s);
        cold().await?;
        let g = llm
            .generate(Prompt::Tokens(prompt.clone()), fixed(args.gen_tokens))
            .await?;
        ours.gen_depth.push(g.stats.generation_tokens_per_s);
    }
    let peak_rss_mb = peak_rss_mb();
    let ttft = time_to_first_token(ctx, &llm, args.rounds).await?;
    let batched = batched_throughput(&llm, args.concurrency, args.gen_tokens, args.rounds).await?;
    drop(llm);

    // candle as it comes, on the same file and tokens.
    let stock = if args.no_baseline {
        None
    } else {
        let start = Instant::now();
        let mut model = load_stock(&gguf)?;
        let stock_load_ms = ms(start);
        let mut s = Speeds::default();
        for _ in 0..args.rounds {
            let t = Instant::now();
            stock_forward(&mut model, &prompt, 0)?;
            s.prompt.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
            s.gen0.push(stock_generate(&mut model, &[1], args.gen_tokens)?);
            s.gen_depth
                .push(stock_generate(&mut model, &prompt, args.gen_tokens)?);
        }
        Some((stock_load_ms, s))
    };

    // MiniLM: one sentence, and a batch of 32.
    let embedder = triage_runtime::EmbedHandle::load(&mini_files.dir)?;
    let sentence =
        "Which of our contracts can be terminated for convenience with ninety days' notice?".to_string();
    embedder.embed(vec![sentence.clone()]).await?; // warm-up
    let mut single = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        embedder.embed(vec![sentence.clone()]).await?;
        single.push(ms(t));
    }
    let batch: Vec<String> = PROSE.split(". ").cycle().take(32).map(str::to_string).collect();
    let mut batch_rate = Vec::new();
    for _ in 0..args.rounds {
        let t = Instant::now();
        embedder.embed(batch.clone()).await?;
        batch_rate.push(32.0 / t.elapsed().as_secs_f64());
    }

    let (p, g0, gd) = (median(&ours.prompt), median(&ours.gen0), median(&ours.gen_depth));
    let minilm_ms = median(&single);
    // The kernel set the runtime picked for this CPU (TRIAGE_KERNELS can ask for a slower one).
    let kernels = triage_runtime::cpu::Kernels::detect().name;
    let minilm_rate = median(&batch_rate);
    let mut out = std::io::stdout().lock();
    if args.json {
        let baseline = stock.as_ref().map(|(l, s)| {
            json!({
                "load_ms": l,
                "prompt_tokens_per_s": median(&s.prompt),
                "generation_tokens_per_s_depth0": median(&s.gen0),
                "generation_tokens_per_s_depth_prompt": median(&s.gen_depth),
            })
        });
        let value = json!({
            "model": model_name,
            "threads": threads,
            "kernels": kernels,
            "rounds": args.rounds,
            "prompt_tokens": prompt.len(),
            "gen_tokens": args.gen_tokens,
            "load_ms": load_ms,
            "prompt_tokens_per_s": p,
            "generation_tokens_per_s_depth0": g0,
            "generation_tokens_per_s_depth_prompt": gd,
            "peak_rss_mb": peak_rss_mb,
            "ttft": {
                "agent": ttft.agent,
                "prompt_tokens": ttft.prompt_tokens,
                "cached_prompt_tokens": ttft.cached_tokens,
                "cold_ms": ttft.cold_ms,
                "cached_ms": ttft.cached_ms,
                "ratio": ttft.cached_ms / ttft.cold_ms,
            },
            "batched": {
                "concurrency": batched.concurrency,
                "single_tokens_per_s": batched.single,
                "aggregate_tokens_per_s": batched.aggregate,
                "ratio": batched.aggregate / batched.single,
                "batch_peak": batched.batch_peak,
            },
            "minilm_single_ms": minilm_ms,
            "minilm_batch32_sentences_per_s": minilm_rate,
            "candle_stock": baseline,
        });
        writeln!(out, "{value}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let ratio = |ours: f64, theirs: f64| format!("{:.2}x", ours / theirs);
    let mut rows = vec![vec!["model load".to_string(), format!("{load_ms:.0} ms")]];
    let mut header = vec!["measure", "triage"];
    if let Some((l, s)) = &stock {
        header.extend(["candle stock", "ratio"]);
        rows[0].extend([format!("{l:.0} ms"), ratio(*l, load_ms)]);
        rows.push(vec![
            format!("prompt ({} tokens)", prompt.len()),
            format!("{p:.1} tok/s"),
            format!("{:.1} tok/s", median(&s.prompt)),
            ratio(p, median(&s.prompt)),
        ]);
        rows.push(vec![
            "generation, depth 0".into(),
            format!("{g0:.1} tok/s"),
            format!("{:.1} tok/s", median(&s.gen0)),
            ratio(g0, median(&s.gen0)),
        ]);
        rows.push(vec![
            format!("generation, depth {}", prompt.len()),
            format!("{gd:.1} tok/s"),
            format!("{:.1} tok/s", median(&s.gen_depth)),
            ratio(gd, median(&s.gen_depth)),
        ]);
    } else {
        rows.push(vec![
            format!("prompt ({} tokens)", prompt.len()),
            format!("{p:.1} tok/s"),
        ]);
        rows.push(vec!["generation, depth 0".into(), format!("{g0:.1} tok/s")]);
        rows.push(vec![
            format!("generation, depth {}", prompt.len()),
            format!("{gd:.1} tok/s"),
        ]);
    }
    rows.push(vec![
        "peak RSS (generation model)".into(),
        format!("{peak_rss_mb:.0} MB"),
    ]);
    rows.push(vec![
        format!(
            "first token, {} request, cold ({} tokens)",
            ttft.agent, ttft.prompt_tokens
        ),
        format!("{:.1} ms", ttft.cold_ms),
    ]);
    rows.push(vec![
        format!(
            "first token, system prompt cached ({} reused)",
            ttft.cached_tokens
        ),
        format!(
            "{:.1} ms ({:.2}x cold)",
            ttft.cached_ms,
            ttft.cached_ms / ttft.cold_ms
        ),
    ]);
    rows.push(vec![
        "generation, one stream (wall clock)".into(),
        format!("{:.1} tok/s", batched.single),
    ]);
    rows.push(vec![
        format!(
            "generation, {} concurrent (batch of {})",
            batched.concurrency, batched.batch_peak
        ),
        format!(
            "{:.1} tok/s ({:.2}x one stream)",
            batched.aggregate,
            batched.aggregate / batched.single
        ),
    ]);
    rows.push(vec!["MiniLM, one sentence".into(), format!("{minilm_ms:.1} ms")]);
    rows.push(vec![
        "MiniLM, batch of 32".into(),
        format!("{minilm_rate:.0} sentences/s"),
    ]);
    for r in &mut rows {
        r.resize(header.len(), String::new());
    }
    writeln!(
        out,
        "{} on {threads} threads, {} kernels, median of {} rounds",
        model_name, kernels, args.rounds
    )?;
    super::print_table(&mut out, &header, &rows)?;
    writeln!(
        out,
        "ratio: triage over candle stock (above 1 is faster; for load time, below 1 is slower)"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Time to first token of a specialist request (its system prompt and a
/// short question), computed in full and with the system prompt's keys
/// and values from the prefix cache: medians in ms.
#[derive(Debug)]
struct Ttft {
    agent: String,
    prompt_tokens: usize,
    cached_tokens: usize,
    cold_ms: f64,
    cached_ms: f64,
}

async fn time_to_first_token(ctx: &triage::Context, llm: &LlmHandle, rounds: usize) -> anyhow::Result<Ttft> {
    let specs = ctx.specs(None)?;
    let spec = specs
        .iter()
        .find(|s| s.name == "legal")
        .or(specs.first())
        .context("no specialist specs to take a system prompt from")?;
    let questions = [
        "Can the supplier terminate this agreement for convenience, and with how much notice?",
        "Which law governs the contract, and where are disputes resolved?",
    ];
    let request = |q: &str| Prompt::chat(Some(&spec.system_prompt), q);
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    let (mut prompt_tokens, mut cached_tokens) = (0, 0);
    for _ in 0..rounds {
        llm.with_engine(|e| e.clear_prefix_cache()).await?;
        let g = llm.generate(request(questions[0]), fixed(1)).await?;
        cold.push(g.stats.prompt_ms);
        // Another question after the same system prompt: only its own tokens run.
        let g = llm.generate(request(questions[1]), fixed(1)).await?;
        cached.push(g.stats.prompt_ms);
        prompt_tokens = g.stats.prompt_tokens;
        cached_tokens = g.stats.cached_prompt_tokens;
    }
    Ok(Ttft {
        agent: spec.name.clone(),
        prompt_tokens,
        cached_tokens,
        cold_ms: median(&cold),
        cached_ms: median(&cached),
    })
}

/// Generation throughput of one stream and of `concurrency` streams at
/// once (continuous batching), both by the wall clock from request to
/// last token: medians in tokens/s.
#[derive(Debug)]
struct Batched {
    concurrency: usize,
    single: f64,
    aggregate: f64,
    /// The largest batch the concurrent generations were decoded in.
    batch_peak: usize,
}

async fn batched_throughput(
    llm: &LlmHandle,
    concurrency: usize,
    gen_tokens: usize,
    rounds: usize,
) -> anyhow::Result<Batched> {
    // Each stream has its own two-token prompt, so no two are the same
    // sequence and none comes from the prefix cache.
    let prompt = |i: usize| Prompt::Tokens(vec![1, 100 + i as u32]);
    let (mut single, mut aggregate, mut batch_peak) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        llm.with_engine(|e| e.clear_prefix_cache()).await?;
        let t = Instant::now();
        let g = llm.generate(prompt(0), fixed(gen_tokens)).await?;
        single.push(g.tokens.len() as f64 / t.elapsed().as_secs_f64());
        llm.with_engine(|e| e.clear_prefix_cache()).await?;
        let t = Instant::now();
        let all = futures::future::try_join_all(
            (0..concurrency).map(|i| llm.generate(prompt(i), fixed(gen_tokens))),
        )
        .await?;
        let tokens: usize = all.iter().map(|g| g.tokens.len()).sum();
        aggregate.push(tokens as f64 / t.elapsed().as_secs_f64());
        batch_peak = all.iter().map(|g| g.stats.batch_peak).max().unwrap_or(1);
    }
    Ok(Batched {
        concurrency,
        single: median(&single),
        aggregate: median(&aggregate),
        batch_peak,
    })
}

#[derive(Debug, Default)]
struct Speeds {
    prompt: Vec<f64>,
    gen0: Vec<f64>,
    gen_depth: Vec<f64>,
}

fn fixed(n: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: n,
        ignore_eos: true,
        ..Default::default()
    }
}

async fn prompt_tokens(llm: &LlmHandle, n: usize) -> anyhow::Result<Vec<u32>> {
    let mut text = PROSE.to_string();
    loop {
        let ids = llm.tokenize(Prompt::Text(text.clone())).await?;
        if ids.len() >= n {
            return Ok(ids[..n].to_vec());
        }
        text.push(' ');
        text.push_str(PROSE);
    }
}

fn load_stock(path: &Path) -> anyhow::Result<ModelWeights> {
    let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let content = gguf_file::Content::read(&mut f)?;
    Ok(ModelWeights::from_gguf(content, &mut f, &Device::Cpu)?)
}

fn stock_forward(model: &mut ModelWeights, tokens: &[u32], pos: usize) -> anyhow::Result<u32> {
    let input = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
    let logits = model.forward(&input, pos)?.squeeze(0)?;
    Ok(logits.argmax(0)?.to_scalar::<u32>()?)
}

/// Greedy tokens/s after `prompt`, not counting the prompt pass.
fn stock_generate(model: &mut ModelWeights, prompt: &[u32], n: usize) -> anyhow::Result<f64> {
    let mut next = stock_forward(model, prompt, 0)?;
    let start = Instant::now();
    for i in 0..n - 1 {
        next = stock_forward(model, &[next], prompt.len() + i)?;
    }
    Ok((n - 1) as f64 / start.elapsed().as_secs_f64())
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident memory of this process so far (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
