//! The synchronous core of a generation model: tokenizer, chat template,
//! the transformer, sampling, stop sequences and label scoring. It runs on
//! the model's own worker thread (see [`crate::LlmHandle`]).

use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

use crate::chat::{ChatTemplate, Message};
use crate::cpu::pool::SharedMut;
use crate::llama::{Chunk, KvCache, Llama, LlamaConfig, Logits, largest, log_softmax, log_sum_exp_from};
use crate::prefix::PrefixCache;
use crate::stream::{StopCheck, StopMatcher, Utf8Stream};
use crate::{Error, Tokenizer};

/// One row of a forward pass's logits, shared with the other rows of its
/// batch rather than copied out (a row is 49,152 values for SmolLM2).
#[derive(Debug, Clone)]
struct Row {
    all: std::sync::Arc<Vec<f32>>,
    start: usize,
    len: usize,
}

impl Row {
    /// Row `r` of rows of `len` values.
    fn of(all: &std::sync::Arc<Vec<f32>>, r: usize, len: usize) -> Row {
        assert!(
            (r + 1) * len <= all.len(),
            "row {r} of {len} values is out of range"
        );
        Row {
            all: all.clone(),
            start: r * len,
            len,
        }
    }
}

impl std::ops::Deref for Row {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.all[self.start..self.start + self.len]
    }
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template and ending
    /// with the assistant's turn opened.
    Chat(Vec<Message>),
    /// Text used as is (special-token text such as `<|im_start|>` parsed).
    Text(String),
    /// Token ids used as is.
    Tokens(Vec<u32>),
}

impl Prompt {
    /// A one-turn chat with an optional system prompt.
    pub fn chat(system: Option<&str>, user: &str) -> Prompt {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(Message::system(s));
        }
        messages.push(Message::user(user));
        Prompt::Chat(messages)
    }
}

/// How to pick tokens and when to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 means greedy decoding (the default: same input, same output).
    pub temperature: f64,
    /// Sample only among the k most likely tokens.
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose mass reaches p.
    pub top_p: Option<f64>,
    /// Divides the logits of recently seen tokens (1.0 = off).
    pub repetition_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repetition_window: usize,
    /// Seed of the sampler; the same seed gives the same sample.
    pub seed: u64,
    /// Generation ends before any of these strings; they are not returned.
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 299792458,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl GenerateParams {
    /// Checks the ranges of every parameter.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature must be 0 or more, got {}", self.temperature));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("top_p must be in (0, 1], got {p}"));
        }
        if self.top_k == Some(0) {
            return bad("top_k must be at least 1".into());
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty must be above 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    fn sampling(&self) -> Sampling {
        if self.temperature == 0.0 {
            return Sampling::ArgMax;
        }
        let temperature = self.temperature;
        match (self.top_k, self.top_p) {
            (None, None) => Sampling::All { temperature },
            (Some(k), None) => Sampling::TopK { k, temperature },
            (None, Some(p)) => Sampling::TopP { p, temperature },
            (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop sequence was generated.
    Stop,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    Context,
    /// The caller went away.
    Cancelled,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenEvent {
    pub id: u32,
    /// Log-probability of this token under the model (temperature 1, before
    /// any penalty): how sure the model was.
    pub logprob: f32,
    /// Text released by this token: may be empty (part of a multi-byte
    /// character, or held back as a possible stop sequence start) or carry
    /// text of earlier tokens.
    pub text: String,
}

/// What a generation reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GenerationEvent<'a> {
    /// A token was generated.
    Token(&'a TokenEvent),
    /// Text released at the end without a new token: what was held back as
    /// the possible start of a stop sequence, or an unfinished character.
    Tail(&'a str),
}

/// Timings and counts of one generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    #[serde(default)]
    pub cached_prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Time to process the prompt (and produce the first logits).
    pub prompt_ms: f64,
    /// Time spent generating after the prompt.
    pub generation_ms: f64,
    pub prompt_tokens_per_s: f64,
    pub generation_tokens_per_s: f64,
    /// The most generations decoded together in one step while this one
    /// ran (1 when it ran alone; see continuous batching in `LlmHandle`).
    #[serde(default)]
    pub batch_peak: usize,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<TokenEvent>,
    pub finish_reason: FinishReason,
    pub stats: GenerationStats,
}

impl Generation {
    /// Mean log-probability of the generated tokens (0 when none).
    pub fn mean_logprob(&self) -> f32 {
        if self.tokens.is_empty() {
            return 0.0;
        }
        self.tokens.iter().map(|t| t.logprob).sum::<f32>() / self.tokens.len() as f32
    }
}

/// The log-likelihood of one candidate continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    pub label: String,
    /// Sum of the candidate's token log-probabilities after the prompt.
    pub logprob: f32,
    /// Number of tokens in the candidate.
    pub tokens: usize,
    /// Share of probability among the candidates (softmax of `logprob`).
    pub probability: f32,
}

/// Static facts about a loaded model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub config: LlamaConfig,
    pub has_chat_template: bool,
    pub load_ms: f64,
}

/// Model, tokenizer and template: everything one worker thread owns.
#[derive(Debug)]
pub struct Engine {
    model: Llama,
    prefixes: PrefixCache,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    info: ModelInfo,
    /// The logits of recent decoding steps, reused once no decoder holds
    /// a row of them: a batch's logits are 1.5 MB (8 rows), and a fresh
    /// buffer each step was zeroed only to be overwritten.
    recent_logits: Vec<std::sync::Arc<Vec<f32>>>,
}

/// Options for loading a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Cap on the context window (default: what the model was trained for).
    pub max_context: Option<usize>,
    /// Threads for inference (default: `TRIAGE_THREADS`, else every core).
    pub threads: Option<usize>,
}

/// Threads to use when not told: `TRIAGE_THREADS`, else every core the
/// process may run on.
pub fn default_threads() -> usize {
    std::env::var("TRIAGE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Engine {
    /// Loads a GGUF model file.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Engine, Error> {
        let start = Instant::now();
        let io_err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io_err)?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            message: format!("not a readable GGUF file: {e}"),
        })?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let threads = options.threads.unwrap_or_else(default_threads);
        let model = Llama::from_gguf(&content, &mut file, path, options.max_context, threads)?;
        let text_of = |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or_default();
        let bos = text_of(tokenizer.bos.map(|(id, _)| id));
        let eos = text_of(
            content
                .metadata
                .get("tokenizer.ggml.eos_token_id")
                .and_then(|v| v.to_u32().ok()),
        );
        let template = match content.metadata.get("tokenizer.chat_template") {
            Some(t) => Some(ChatTemplate::new(t.to_string()?, &bos, &eos)?),
            None => None,
        };
        let name = content
            .metadata
            .get("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| {
                path.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            });
        let info = ModelInfo {
            name,
            architecture: "llama".into(),
            config: model.config().clone(),
            has_chat_template: template.is_some(),
            load_ms: start.elapsed().as_secs_f64() * 1e3,
        };
        tracing::info!(model = %info.name, load_ms = info.load_ms, "model loaded");
        Ok(Engine {
            model,
            prefixes: PrefixCache::default(),
            tokenizer,
            template,
            info,
            recent_logits: Vec::new(),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The transformer itself, for callers that drive forward passes and
    /// the KV cache directly (tests, benchmarks).
    pub fn model_mut(&mut self) -> &mut Llama {
        &mut self.model
    }

    /// Forgets every cached prefix, and the model's KV cache (the next
    /// prompt is computed in full: cold-start measurements).
    pub fn clear_prefix_cache(&mut self) {
        self.prefixes.clear();
        self.model.clear_cache();
    }

    /// Runs `prompt` on the default sequence, reusing the longest cached
    /// prefix, and remembers it for later requests. Returns the number of
    /// tokens reused and the last position's logits.
    fn prefill(&mut self, prompt: &[u32]) -> Result<(usize, Vec<f32>), Error> {
        let cached = self.prefixes.restore(self.model.cache_mut(), prompt);
        let logits = self.model.forward(&prompt[cached..], Logits::Last)?;
        self.prefixes.store(self.model.cache(), prompt.len());
        Ok((cached, logits))
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt as token ids.
    ///
    /// In a chat, only the template's own text may produce control tokens:
    /// message contents are tokenized as plain text, so a document that
    /// contains `<|im_end|>` cannot close its turn and open another.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>, Error> {
        let mut ids = Vec::new();
        if let Some((bos, true)) = self.tokenizer.bos {
            ids.push(bos);
        }
        match prompt {
            Prompt::Tokens(given) => return Ok(given.clone()),
            Prompt::Text(text) => ids.extend(self.tokenizer.encode(text, true)?),
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    Error::InvalidRequest("this model has no chat template; send a text prompt".into())
                })?;
                // Render with a placeholder per message, then tokenize the
                // template's text and each content separately.
                let marked: Vec<Message> = messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| Message {
                        role: m.role.clone(),
                        content: format!("{OPEN}{i}{CLOSE}"),
                    })
                    .collect();
                let rendered = template.render(&marked, true)?;
                let mut rest = rendered.as_str();
                while let Some(start) = rest.find(OPEN) {
                    ids.extend(self.tokenizer.encode(&rest[..start], true)?);
                    let after = &rest[start + OPEN.len_utf8()..];
                    let end = after.find(CLOSE).ok_or_else(|| {
                        Error::Template("the chat template altered a message placeholder".into())
                    })?;
                    let index: usize = after[..end].parse().map_err(|_| {
                        Error::Template("the chat template altered a message placeholder".into())
                    })?;
                    ids.extend(self.tokenizer.encode(&messages[index].content, false)?);
                    rest = &after[end + CLOSE.len_utf8()..];
                }
                ids.extend(self.tokenizer.encode(rest, true)?);
            }
        }
        Ok(ids)
    }

    /// Generates a continuation; `on_event` sees each token as it is made
    /// and returns `false` to cancel.
    pub fn generate(
        &mut self,
        prompt: &Prompt,
        params: &GenerateParams,
        mut on_event: impl FnMut(GenerationEvent<'_>) -> bool,
    ) -> Result<Generation, Error> {
        let mut d = self.begin(prompt, params)?;
        while d.advance(&self.tokenizer, &mut on_event)? {
            self.step(&mut [&mut d])?;
        }
        Ok(d.finish(&mut on_event))
    }

    /// Starts a generation on a sequence of its own: runs the prompt
    /// (reusing a cached prefix) and returns its state, ready for
    /// [`Decoder::advance`]. Several decoders advance together through
    /// [`Engine::step`] (batched decoding).
    pub fn begin(&mut self, prompt: &Prompt, params: &GenerateParams) -> Result<Decoder, Error> {
        self.begin_batch(&[(prompt, params)])
            .pop()
            .expect("one result per request")
    }

    /// Starts several generations, their prompts run together in one
    /// forward pass (requests that arrive at once share the pass); one
    /// result per request, in order. A bad request fails alone.
    pub fn begin_batch(&mut self, requests: &[(&Prompt, &GenerateParams)]) -> Vec<Result<Decoder, Error>> {
        let context = self.model.config().context_length;
        let mut results: Vec<Option<Result<Decoder, Error>>> = requests.iter().map(|_| None).collect();
        // Each request's checks, tokens and reused prefix first.
        let mut ready = Vec::new();
        for (i, (prompt, params)) in requests.iter().enumerate() {
            let checked = params.validate().and_then(|()| {
                let tokens = self.prompt_tokens(prompt)?;
                if tokens.is_empty() {
                    return Err(Error::InvalidRequest("the prompt is empty".into()));
                }
                if tokens.len() >= context {
                    return Err(Error::PromptTooLong {
                        prompt_tokens: tokens.len(),
                        context,
                    });
                }
                Ok(tokens)
            });
            match checked {
                Ok(tokens) => {
                    let mut cache = KvCache::new(self.model.config());
                    let cached = self.prefixes.restore(&mut cache, &tokens);
                    ready.push((i, tokens, cache, cached));
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let start = Instant::now();
        let mut chunks: Vec<Chunk<'_>> = ready
            .iter_mut()
            .map(|(_, tokens, cache, cached)| Chunk {
                cache,
                tokens: &tokens[*cached..],
                logits: Logits::Last,
            })
            .collect();
        let outcome = if chunks.is_empty() {
            Ok(Vec::new())
        } else {
            self.model.forward_batch(&mut chunks)
        };
        drop(chunks);
        let prompt_ms = start.elapsed().as_secs_f64() * 1e3;
        let vocab = self.model.config().vocab_size;
        // Each prompt's logits (or error) and the time its pass took.
        let runs: Vec<(f64, Result<Row, Error>)> = match outcome {
            Ok(logits) => {
                let all = std::sync::Arc::new(logits);
                (0..all.len() / vocab)
                    .map(|r| (prompt_ms, Ok(Row::of(&all, r, vocab))))
                    .collect()
            }
            // A failed pass (no cache has changed): each prompt alone, so
            // that each gets its own outcome.
            Err(_) => ready
                .iter_mut()
                .map(|(_, tokens, cache, cached)| {
                    let start = Instant::now();
                    let run = self
                        .model
                        .forward_batch(&mut [Chunk {
                            cache,
                            tokens: &tokens[*cached..],
                            logits: Logits::Last,
                        }])
                        .map(|logits| Row::of(&std::sync::Arc::new(logits), 0, vocab));
                    (start.elapsed().as_secs_f64() * 1e3, run)
                })
                .collect(),
        };
        for ((i, tokens, cache, cached), (prompt_ms, run)) in ready.into_iter().zip(runs) {
            results[i] = Some(run.map(|logits| {
                self.prefixes.store(&cache, tokens.len());
                Decoder::new(
                    requests[i].1,
                    tokens,
                    cache,
                    cached,
                    prompt_ms,
                    logits,
                    &self.model,
                )
            }));
        }
        results
            .into_iter()
            .map(|r| r.expect("every request was checked or run"))
            .collect()
    }

    /// One forward pass for every decoder waiting with a token (see
    /// [`Decoder::advance`]): their tokens run together, each on its own
    /// sequence, and each gets its next logits.
    pub fn step(&mut self, decoders: &mut [&mut Decoder]) -> Result<(), Error> {
        let mut waiting: Vec<&mut Decoder> = decoders
            .iter_mut()
            .filter(|d| d.next.is_some())
            .map(|d| &mut **d)
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let tokens: Vec<[u32; 1]> = waiting.iter().map(|d| [d.next.unwrap_or(0)]).collect();
        let mut chunks: Vec<Chunk<'_>> = waiting
            .iter_mut()
            .zip(&tokens)
            .map(|(d, t)| Chunk {
                cache: &mut d.cache,
                tokens: t,
                logits: Logits::Last,
            })
            .collect();
        // A step's buffer is free again two steps later, when every
        // decoder has moved on to newer rows.
        let free = self
            .recent_logits
            .iter()
            .position(|l| std::sync::Arc::strong_count(l) == 1);
        let mut buffer = free
            .and_then(|i| std::sync::Arc::into_inner(self.recent_logits.remove(i)))
            .unwrap_or_default();
        self.model.forward_batch_into(&mut chunks, &mut buffer)?;
        drop(chunks);
        let logits = std::sync::Arc::new(buffer);
        if self.recent_logits.len() == 2 {
            self.recent_logits.remove(0);
        }
        self.recent_logits.push(logits.clone());
        let n = waiting.len();
        let vocab = self.model.config().vocab_size;
        // Each decoder takes its row, its log-sum-exp and its greedy pick,
        // the rows shared out among the threads.
        let decoders = SharedMut::new(&mut waiting[..]);
        self.model.for_rows(n, &|rows| {
            // SAFETY: these decoders belong to this thread alone during the step.
            let mine = unsafe { decoders.slice(rows.start, rows.end) };
            for (d, r) in mine.iter_mut().zip(rows) {
                d.logits = Row::of(&logits, r, vocab);
                (d.log_sum_exp, d.top) = sum_and_pick(self.model.kernels(), &d.logits);
                d.next = None;
                d.batch_peak = d.batch_peak.max(n);
            }
        });
        Ok(())
    }

    /// Log-likelihood of each candidate continuation after the prompt. The
    /// prompt is run once; each candidate reuses its KV cache.
    pub fn score(&mut self, prompt: &Prompt, candidates: &[String]) -> Result<Vec<LabelScore>, Error> {
        if candidates.is_empty() {
            return Err(Error::InvalidRequest(
                "label scoring needs at least one candidate".into(),
            ));
        }
        let prompt = self.prompt_tokens(prompt)?;
        if prompt.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        let encoded: Vec<Vec<u32>> = candidates
            .iter()
            .map(|c| {
                let ids = self.tokenizer.encode(c, true)?;
                if ids.is_empty() {
                    return Err(Error::InvalidRequest(format!("candidate {c:?} has no tokens")));
                }
                Ok(ids)
            })
            .collect::<Result<_, _>>()?;
        let longest = encoded.iter().map(Vec::len).max().unwrap_or(0);
        let context = self.model.config().context_length;
        // The last candidate token is scored, never fed back.
        if prompt.len() + longest - 1 > context {
            return Err(Error::ScoringTooLong {
                prompt_tokens: prompt.len(),
                candidate_tokens: longest,
                context,
            });
        }
        let first = self.prefill(&prompt)?.1;
        let first = log_softmax(self.model.kernels(), &first);
        let mut scores = Vec::with_capacity(candidates.len());
        for (label, ids) in candidates.iter().zip(&encoded) {
            let mut logprob = first[ids[0] as usize];
            if ids.len() > 1 {
                let logits = self.model.forward(&ids[..ids.len() - 1], Logits::All)?;
                let vocab = self.model.config().vocab_size;
                for (row, &next) in logits.chunks_exact(vocab).zip(&ids[1..]) {
                    logprob += log_softmax(self.model.kernels(), row)[next as usize];
                }
                self.model.truncate_cache(prompt.len());
            }
            scores.push(LabelScore {
                label: label.clone(),
                logprob,
                tokens: ids.len(),
                probability: 0.0,
            });
        }
        let max = scores.iter().map(|s| s.logprob).fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = scores.iter().map(|s| (s.logprob - max).exp()).sum();
        for s in &mut scores {
            s.probability = (s.logprob - max).exp() / total;
        }
        Ok(scores)
    }

    /// Raw next-token logits after `tokens` (cache cleared first); for tests
    /// and tools that need the distribution itself.
    pub fn next_token_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, Error> {
        self.model.clear_cache();
        self.model.forward(tokens, Logits::Last)
    }
}

/// One generation in progress: its sequence's KV cache, its sampler, stop
/// matcher and text so far. Made by [`Engine::begin`]; advanced one token
/// at a time by [`Decoder::advance`] and [`Engine::step`].
#[derive(Debug)]
pub struct Decoder {
    params: GenerateParams,
    sampler: Sampler,
    utf8: Utf8Stream,
    stops: StopMatcher,
    history: Vec<u32>,
    prompt_tokens: usize,
    cached: usize,
    prompt_ms: f64,
    gen_start: Instant,
    batch_peak: usize,
    tokens: Vec<TokenEvent>,
    text: String,
    cache: KvCache,
    /// The logits to pick the next token from.
    logits: Row,
    /// Their log-sum-exp (for the picked token's log-probability) and
    /// their largest (the greedy pick); a batched step computes both on all
    /// the threads.
    log_sum_exp: f32,
    top: u32,
    /// The token waiting to run in the next [`Engine::step`].
    next: Option<u32>,
    finish: Option<FinishReason>,
    context: usize,
}

impl Decoder {
    fn new(
        params: &GenerateParams,
        prompt: Vec<u32>,
        cache: KvCache,
        cached: usize,
        prompt_ms: f64,
        logits: Row,
        model: &Llama,
    ) -> Decoder {
        let (log_sum_exp, top) = sum_and_pick(model.kernels(), &logits);
        Decoder {
            params: params.clone(),
            sampler: Sampler::new(params),
            utf8: Utf8Stream::default(),
            stops: StopMatcher::new(params.stop.clone()),
            prompt_tokens: prompt.len(),
            history: prompt,
            cached,
            prompt_ms,
            gen_start: Instant::now(),
            batch_peak: 1,
            tokens: Vec::new(),
            text: String::new(),
            cache,
            log_sum_exp,
            top,
            logits,
            next: None,
            finish: None,
            context: model.config().context_length,
        }
    }

    /// Picks the next token from the current logits and reports it.
    /// Returns `true` when the token must run (the next [`Engine::step`]
    /// gives new logits), `false` when the generation has ended.
    pub fn advance(
        &mut self,
        tokenizer: &Tokenizer,
        on_event: &mut impl FnMut(GenerationEvent<'_>) -> bool,
    ) -> Result<bool, Error> {
        if self.finish.is_some() {
            return Ok(false);
        }
        let p = &self.params;
        let id = if p.repetition_penalty != 1.0 {
            let window = self.history.len().saturating_sub(p.repetition_window);
            let mut penalised = self.logits.to_vec();
            repeat_penalty(&mut penalised, p.repetition_penalty, &self.history[window..]);
            self.sampler.sample(&penalised)?
        } else if self.sampler.is_greedy() {
            self.top
        } else {
            self.sampler.sample(&self.logits)?
        };
        let end = |d: &mut Decoder, why| {
            d.finish = Some(why);
            Ok(false)
        };
        if !p.ignore_eos && tokenizer.eos_ids.contains(&id) {
            return end(self, FinishReason::Eos);
        }
        self.history.push(id);
        // Control tokens have no bytes; a stop sequence can still name one.
        if tokenizer.is_special(id)
            && let Some(name) = tokenizer.token_text(id)
            && p.stop.contains(&name)
        {
            return end(self, FinishReason::Stop);
        }
        let piece = self.utf8.push(tokenizer.token_bytes(id));
        let (released, stopped) = match self.stops.push(&piece) {
            StopCheck::Continue(t) => (t, false),
            StopCheck::Stop(t) => (t, true),
        };
        self.text.push_str(&released);
        let event = TokenEvent {
            id,
            logprob: self.logits[id as usize] - self.log_sum_exp,
            text: released,
        };
        let keep_going = on_event(GenerationEvent::Token(&event));
        self.tokens.push(event);
        if stopped {
            return end(self, FinishReason::Stop);
        }
        if !keep_going {
            return end(self, FinishReason::Cancelled);
        }
        if self.tokens.len() >= self.params.max_tokens {
            return end(self, FinishReason::MaxTokens);
        }
        if self.cache.len() >= self.context {
            return end(self, FinishReason::Context);
        }
        self.next = Some(id);
        Ok(true)
    }

    /// Whether the generation has ended.
    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// The finished generation (call once `advance` returned `false`):
    /// releases text held back as a possible stop sequence, and reports
    /// the figures.
    pub fn finish(mut self, on_event: &mut impl FnMut(GenerationEvent<'_>) -> bool) -> Generation {
        let finish = self.finish.unwrap_or(FinishReason::Cancelled);
        if finish != FinishReason::Stop {
            // Release what was held back as a possible stop sequence, and
            // an unfinished character.
            let mut tail = self.utf8.finish();
            tail = match self.stops.push(&tail) {
                StopCheck::Continue(t) => t + &self.stops.finish(),
                StopCheck::Stop(t) => t,
            };
            if !tail.is_empty() {
                self.text.push_str(&tail);
                if let Some(last) = self.tokens.last_mut() {
                    last.text.push_str(&tail);
                }
                on_event(GenerationEvent::Tail(&tail));
            }
        }
        let generation_ms = self.gen_start.elapsed().as_secs_f64() * 1e3;
        let n = self.tokens.len();
        let computed = self.prompt_tokens - self.cached;
        let stats = GenerationStats {
            prompt_tokens: self.prompt_tokens,
            cached_prompt_tokens: self.cached,
            generated_tokens: n,
            prompt_ms: self.prompt_ms,
            batch_peak: self.batch_peak,
            generation_ms,
            prompt_tokens_per_s: per_second(computed, self.prompt_ms),
            // The first token comes from the prompt pass; each later one, and
            // the end-of-sequence token when there is one, costs a forward.
            generation_tokens_per_s: per_second(
                if finish == FinishReason::Eos {
                    n
                } else {
                    n.saturating_sub(1)
                },
                generation_ms,
            ),
        };
        Generation {
            text: self.text,
            tokens: self.tokens,
            finish_reason: finish,
            stats,
        }
    }
}

/// Private-use characters around message placeholders in a rendered chat.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// Picks the next token: the most likely one (greedy), or a seeded sample.
struct Sampler(Option<LogitsProcessor>);

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Sampler(seeded)"
        } else {
            "Sampler(greedy)"
        })
    }
}

impl Sampler {
    fn new(params: &GenerateParams) -> Sampler {
        match params.sampling() {
            Sampling::ArgMax => Sampler(None),
            s => Sampler(Some(LogitsProcessor::from_sampling(params.seed, s))),
        }
    }

    fn is_greedy(&self) -> bool {
        self.0.is_none()
    }

    fn sample(&mut self, logits: &[f32]) -> Result<u32, Error> {
        match &mut self.0 {
            None => Ok(argmax(logits)),
            Some(p) => Ok(p.sample(&Tensor::from_slice(logits, logits.len(), &Device::Cpu)?)?),
        }
    }
}

/// Index of the largest value (the first one on ties; NaNs are passed
/// over): [`largest`], then its place (two passes the compiler
/// vectorises, where one pass that tracks the index cannot be).
fn argmax(v: &[f32]) -> u32 {
    place_of(v, largest(v))
}

/// A row of logits' log-sum-exp (for the picked token's log-probability)
/// and greedy pick, from one pass for its largest value.
fn sum_and_pick(k: &crate::cpu::Kernels, logits: &[f32]) -> (f32, u32) {
    let max = largest(logits);
    (log_sum_exp_from(k, logits, max), place_of(logits, max))
}

/// Where `max` (the largest of `v`) first occurs.
fn place_of(v: &[f32], max: f32) -> u32 {
    v.iter().position(|&x| x == max).unwrap_or(0) as u32
}

/// Divides positive logits of the tokens in `recent` by `penalty` and
/// multiplies negative ones, once per distinct token.
fn repeat_penalty(logits: &mut [f32], penalty: f32, recent: &[u32]) {
    let mut seen = std::collections::HashSet::new();
    for &t in recent {
        if seen.insert(t)
            && let Some(l) = logits.get_mut(t as usize)
        {
            *l = if *l >= 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::argmax;

    /// The greedy pick: the first of equal largest values, wherever it lies
    /// (in the eight-lane body or the tail), with NaNs passed over.
    #[test]
    fn argmax_takes_the_first_largest_and_skips_nans() {
        assert_eq!(argmax(&[1.0, 3.0, 2.0, 3.0]), 1);
        let mut v = vec![0.0f32; 21];
        v[19] = 5.0;
        assert_eq!(argmax(&v), 19, "in the tail");
        v[4] = 5.0;
        assert_eq!(argmax(&v), 4, "a tie goes to the first");
        v[0] = f32::NAN;
        assert_eq!(argmax(&v), 4, "a NaN is never the pick");
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
        assert_eq!(argmax(&[-2.0, -1.0]), 1);
    }
}
