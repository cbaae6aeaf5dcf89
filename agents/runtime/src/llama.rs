//! A llama-architecture transformer over GGUF quantized weights: the
//! project's own forward pass on plain buffers, with the kernels and the
//! thread team of [`crate::cpu`].
//!
//! Why not candle's `quantized_llama`: a 135M-parameter model spends most
//! of a token in the overhead around its ~300 small operations (tensor
//! allocation, a KV cache grown by concatenation, threads woken per op),
//! and candle's Q4_1 product has no SIMD kernel. Here every buffer is
//! reused, the KV cache grows in place, one parallel step covers several
//! products, and the kernels are picked for the CPU. It also gives what the
//! runtime needs beyond generation: logits for every position (label
//! scoring), KV caches that can be cut back and copied (prefix caching),
//! and several sequences in one forward pass (batched decoding).
//!
//! candle still reads the GGUF container, and expands tensor formats that
//! have no kernel here.

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file;
use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::Error;
use crate::cpu::pool::{Pool, SharedMut, Shares};
use crate::cpu::{
    ActType, Acts, ActsWriter, Bytes, Kernels, Product, QMatrix, WeightType, matmul, matmul_pair_then,
};

/// Shape and hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    /// Context window the model was trained for (or the cap set at load).
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
}

impl LlamaConfig {
    fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// Which positions to compute logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation; saves the vocabulary projection
    /// for every prompt token).
    Last,
    /// Every position of the input (label scoring).
    All,
}

/// The keys and values of one sequence, for every layer: f16 (as
/// llama.cpp keeps them), one array per layer and key/value head, each
/// position-major and grown in place. An attention item reads one head's
/// keys and values, so they lie contiguous in memory (128 bytes a
/// position for SmolLM2). With the heads of a position side by side, an
/// item read a third of every 384 bytes; attention in a batched step at
/// depth 400 took about a tenth longer (measured on the Xeon).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Values per position in each head's keys (and values).
    head_dim: usize,
    /// Key/value heads per layer.
    heads: usize,
    /// Layer `l`'s head `h` at `l * heads + h`.
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
    /// The tokens whose keys and values are held, in order.
    tokens: Vec<u32>,
}

impl KvCache {
    pub fn new(config: &LlamaConfig) -> KvCache {
        let arrays = config.n_layer * config.n_kv_head;
        KvCache {
            head_dim: config.head_dim,
            heads: config.n_kv_head,
            k: vec![Vec::new(); arrays],
            v: vec![Vec::new(); arrays],
            tokens: Vec::new(),
        }
    }

    /// Whether this cache has the shape of `config`'s.
    fn fits(&self, config: &LlamaConfig) -> bool {
        self.head_dim == config.head_dim
            && self.heads == config.n_kv_head
            && self.k.len() == config.n_layer * config.n_kv_head
    }

    /// Tokens held (the position of the next one).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens held.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Keeps the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len() {
            return;
        }
        for x in self.k.iter_mut().chain(&mut self.v) {
            x.truncate(len * self.head_dim);
        }
        self.tokens.truncate(len);
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Makes this cache hold the first `len` tokens of `other` (a cached
    /// prefix), reusing its own memory.
    pub fn copy_prefix(&mut self, other: &KvCache, len: usize) {
        let len = len.min(other.len());
        (self.head_dim, self.heads) = (other.head_dim, other.heads);
        self.k.resize(other.k.len(), Vec::new());
        self.v.resize(other.v.len(), Vec::new());
        for (dst, src) in self
            .k
            .iter_mut()
            .zip(&other.k)
            .chain(self.v.iter_mut().zip(&other.v))
        {
            dst.clear();
            dst.extend_from_slice(&src[..len * other.head_dim]);
        }
        self.tokens.clear();
        self.tokens.extend_from_slice(&other.tokens[..len]);
    }

    /// Appends layer `layer`'s keys and values of new positions, given
    /// position-major with every head's values side by side (as the
    /// projections compute them), rounded to f16.
    fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let (hd, heads) = (self.head_dim, self.heads);
        for h in 0..heads {
            let at = layer * heads + h;
            for (dst, src) in [(&mut self.k[at], k), (&mut self.v[at], v)] {
                for position in src.chunks_exact(heads * hd) {
                    // Converted eight values at a time where the CPU can.
                    let at = dst.len();
                    dst.resize(at + hd, f16::ZERO);
                    dst[at..].convert_from_f32_slice(&position[h * hd..][..hd]);
                }
            }
        }
    }

    /// Layer `layer`'s keys and values for head `head`, position-major.
    fn head(&self, layer: usize, head: usize) -> (&[f16], &[f16]) {
        let at = layer * self.heads + head;
        (&self.k[at], &self.v[at])
    }

    /// Memory held by keys and values, in bytes.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|x| x.len() * 2).sum()
    }
}

/// Part of a batched forward pass: `tokens` appended to one sequence.
#[derive(Debug)]
pub struct Chunk<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    w_gate: QMatrix,
    w_up: QMatrix,
    w_down: QMatrix,
}

/// Buffers of a forward pass, kept between passes.
#[derive(Debug, Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// One attention-score row per thread.
    scores: Vec<f32>,
    /// Activations quantized per format, indexed like [`act_slot`].
    acts: [Acts; ACT_SLOTS],
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Activation formats: one slot each in the scratch space.
const ACT_SLOTS: usize = 5;

fn act_slot(t: ActType) -> usize {
    match t {
        ActType::Q8_0 => 0,
        ActType::Q8_1 => 1,
        ActType::Q8K => 2,
        ActType::F32 => 3,
        ActType::Q8_0S => 4,
    }
}

/// Most tokens one forward pass takes; longer inputs run in pieces.
const MAX_ROWS: usize = 512;

/// The model: weights, kernels, threads, and the KV cache of its default
/// sequence (the one [`Llama::forward`] extends).
#[derive(Debug)]
pub struct Llama {
    config: LlamaConfig,
    kernels: Kernels,
    pool: Pool,
    embed: QMatrix,
    /// `None` when the output projection is the token embedding (tied).
    output: Option<QMatrix>,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
    cache: KvCache,
    scratch: Scratch,
    span: tracing::Span,
}

impl Llama {
    /// Loads the weights named in `content` from `reader`. `max_context`
    /// caps the context below what the model was trained for; `threads`
    /// is the size of the thread team.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        path: &Path,
        max_context: Option<usize>,
        threads: usize,
    ) -> Result<Llama, Error> {
        let format_err = |message: String| Error::Format {
            path: path.to_path_buf(),
            message,
        };
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(format_err(format!(
                "architecture `{arch}` is not supported (this runtime runs `llama` GGUF models)"
            )));
        }
        let md_u32 = |key: &str| -> Result<usize, Error> {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .ok_or_else(|| format_err(format!("metadata `{key}` is missing")))
        };
        let n_embd = md_u32("llama.embedding_length")?;
        let n_head = md_u32("llama.attention.head_count")?;
        let n_kv_head = md_u32("llama.attention.head_count_kv").unwrap_or(n_head);
        let trained_context = md_u32("llama.context_length")?;
        let context_length = max_context.map_or(trained_context, |m| m.min(trained_context));
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 || n_embd % n_head != 0 {
            return Err(format_err(format!(
                "inconsistent attention shape: {n_head} heads, {n_kv_head} key/value heads, embedding {n_embd}"
            )));
        }
        let head_dim = n_embd / n_head;
        if head_dim % 2 != 0 {
            return Err(format_err(format!(
                "head size {head_dim} is odd; rotary embeddings need pairs"
            )));
        }
        let rope_theta = content
            .metadata
            .get("llama.rope.freq_base")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(10_000.0);
        let rms_eps = content
            .metadata
            .get("llama.attention.layer_norm_rms_epsilon")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1e-5) as f64;

        let kernels = Kernels::detect();
        tracing::debug!(kernels = kernels.name, threads, "inference kernels");
        let mut loader = Loader {
            content,
            reader,
            path,
            interleave: kernels.interleave,
            expanded: Vec::new(),
        };
        let embed = loader.matrix("token_embd.weight")?;
        if embed.cols != n_embd {
            return Err(format_err(format!(
                "token_embd.weight has rows of {}, the embedding is {n_embd}",
                embed.cols
            )));
        }
        let vocab_size = embed.rows;
        let norm = loader.vector("output_norm.weight", n_embd)?;
        // Tied embeddings (SmolLM2): the output projection is the same
        // matrix, used for both rather than loaded twice.
        let output = if content.tensor_infos.contains_key("output.weight") {
            Some(loader.matrix("output.weight")?)
        } else {
            None
        };
        let n_layer = md_u32("llama.block_count")?;
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let name = |w: &str| format!("blk.{i}.{w}.weight");
            let layer = Layer {
                attn_norm: loader.vector(&name("attn_norm"), n_embd)?,
                wq: loader.matrix(&name("attn_q"))?,
                wk: loader.matrix(&name("attn_k"))?,
                wv: loader.matrix(&name("attn_v"))?,
                wo: loader.matrix(&name("attn_output"))?,
                ffn_norm: loader.vector(&name("ffn_norm"), n_embd)?,
                w_gate: loader.matrix(&name("ffn_gate"))?,
                w_up: loader.matrix(&name("ffn_up"))?,
                w_down: loader.matrix(&name("ffn_down"))?,
            };
            let kv_dim = n_kv_head * head_dim;
            let n_ff = layer.w_up.rows;
            let shapes = [
                ("attn_q", &layer.wq, n_embd, n_embd),
                ("attn_k", &layer.wk, kv_dim, n_embd),
                ("attn_v", &layer.wv, kv_dim, n_embd),
                ("attn_output", &layer.wo, n_embd, n_embd),
                ("ffn_gate", &layer.w_gate, n_ff, n_embd),
                ("ffn_up", &layer.w_up, n_ff, n_embd),
                ("ffn_down", &layer.w_down, n_embd, n_ff),
            ];
            for (w, m, rows, cols) in shapes {
                if (m.rows, m.cols) != (rows, cols) {
                    return Err(format_err(format!(
                        "{} is {} × {}, expected {rows} × {cols}",
                        name(w),
                        m.rows,
                        m.cols
                    )));
                }
            }
            layers.push(layer);
        }
        if !loader.expanded.is_empty() {
            tracing::warn!(
                tensors = loader.expanded.len(),
                formats = ?loader.expanded,
                "no kernel for some tensor formats here: they were expanded to f32 (slower, larger)"
            );
        }
        let n_ff = layers.first().map_or(0, |l| l.w_up.rows);
        let inv_freq = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / rope_theta.powf(i as f32 / head_dim as f32))
            .collect();
        let config = LlamaConfig {
            n_layer,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff,
            vocab_size,
            context_length,
            rope_theta,
            rms_eps,
        };
        Ok(Llama {
            cache: KvCache::new(&config),
            config,
            kernels,
            pool: Pool::new(threads),
            embed,
            output,
            norm,
            layers,
            inv_freq,
            scratch: Scratch::default(),
            span: tracing::trace_span!("llama"),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The kernels chosen for this CPU at load.
    pub(crate) fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Number of tokens in the default KV cache (the position of the next token).
    pub fn cached_len(&self) -> usize {
        self.cache.len()
    }

    /// The default sequence's KV cache.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// The default sequence's KV cache, to fill from a cached prefix.
    pub fn cache_mut(&mut self) -> &mut KvCache {
        &mut self.cache
    }

    /// Cuts the default KV cache back to its first `len` tokens.
    pub fn truncate_cache(&mut self, len: usize) {
        self.cache.truncate(len);
    }

    /// Empties the default KV cache.
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// Runs `tokens` after what the default cache holds and returns logits,
    /// `vocab` values per row: one row for [`Logits::Last`], one per token
    /// for [`Logits::All`].
    pub fn forward(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>, Error> {
        if tokens.is_empty() {
            return Err(Error::InvalidRequest("forward needs at least one token".into()));
        }
        let mut cache = std::mem::take(&mut self.cache);
        let start = cache.len();
        let mut result = Vec::new();
        let mut outcome = Ok(());
        for (i, piece) in tokens.chunks(MAX_ROWS).enumerate() {
            let last = (i + 1) * MAX_ROWS >= tokens.len();
            let logits = if last { want } else { Logits::All };
            let mut chunk = [Chunk {
                cache: &mut cache,
                tokens: piece,
                logits,
            }];
            match self.forward_batch(&mut chunk) {
                Ok(l) if want == Logits::All || last => result.extend(l),
                Ok(_) => {}
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if outcome.is_err() {
            cache.truncate(start);
        }
        self.cache = cache;
        outcome.map(|()| result)
    }

    /// One forward pass over several sequences: each chunk's tokens are
    /// appended to its own cache. Returns the logits rows of every chunk in
    /// order (one or one per token, as each asks). On error no cache has
    /// changed.
    pub fn forward_batch(&mut self, chunks: &mut [Chunk<'_>]) -> Result<Vec<f32>, Error> {
        let mut logits = Vec::new();
        self.forward_batch_into(chunks, &mut logits)?;
        Ok(logits)
    }

    /// [`Llama::forward_batch`] into a buffer that may be reused: it is
    /// resized to the logits rows and every value overwritten.
    pub fn forward_batch_into(
        &mut self,
        chunks: &mut [Chunk<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<(), Error> {
        let _enter = self.span.enter();
        let c = &self.config;
        for chunk in chunks.iter_mut() {
            if !chunk.cache.fits(c) {
                if !chunk.cache.is_empty() {
                    return Err(Error::InvalidRequest(
                        "a KV cache of another model was passed to this one".into(),
                    ));
                }
                *chunk.cache = KvCache::new(c);
            }
            if chunk.tokens.is_empty() {
                return Err(Error::InvalidRequest("forward needs at least one token".into()));
            }
            let total = chunk.cache.len() + chunk.tokens.len();
            if total > c.context_length {
                return Err(Error::PromptTooLong {
                    prompt_tokens: total,
                    context: c.context_length,
                });
            }
            if let Some(&bad) = chunk.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(Error::InvalidRequest(format!(
                    "token id {bad} is outside the vocabulary (0 to {})",
                    c.vocab_size - 1
                )));
            }
        }
        let mut s = std::mem::take(&mut self.scratch);
        self.run(chunks, &mut s, logits);
        self.scratch = s;
        Ok(())
    }

    fn run(&self, chunks: &mut [Chunk<'_>], s: &mut Scratch, logits: &mut Vec<f32>) {
        let c = &self.config;
        let (d, kv_dim, hd) = (c.n_embd, c.kv_dim(), c.head_dim);
        // Each row: its chunk and position.
        let rows: Vec<(usize, usize)> = chunks
            .iter()
            .enumerate()
            .flat_map(|(ci, ch)| (0..ch.tokens.len()).map(move |i| (ci, ch.cache.len() + i)))
            .collect();
        let n = rows.len();
        let resize = |v: &mut Vec<f32>, len| v.resize(len, 0.0);
        resize(&mut s.x, n * d);
        resize(&mut s.h, n * d);
        resize(&mut s.q, n * d);
        resize(&mut s.k, n * kv_dim);
        resize(&mut s.v, n * kv_dim);
        resize(&mut s.att, n * d);
        resize(&mut s.o, n * d);
        resize(&mut s.gate, n * c.n_ff);
        resize(&mut s.up, n * c.n_ff);

        // Token embeddings, and the rotary angles of each row's position.
        let tokens = chunks.iter().flat_map(|ch| ch.tokens.iter());
        for (row, &t) in s.x.chunks_exact_mut(d).zip(tokens) {
            self.embed.dequantize_row(t as usize, row);
        }
        let longest = rows.iter().map(|&(_, p)| p + 1).max().unwrap_or(0);
        resize(
            &mut s.scores,
            self.pool.threads() * (c.n_head / c.n_kv_head) * longest,
        );
        let half = hd / 2;
        resize(&mut s.cos, n * half);
        resize(&mut s.sin, n * half);
        for (r, &(_, pos)) in rows.iter().enumerate() {
            for (i, f) in self.inv_freq.iter().enumerate() {
                let angle = pos as f32 * f;
                s.cos[r * half + i] = angle.cos();
                s.sin[r * half + i] = angle.sin();
            }
        }

        for (li, layer) in self.layers.iter().enumerate() {
            // Attention. The previous layer's feed-forward output joins the
            // residual stream first.
            let residual = (li > 0).then_some(&s.o[..]);
            add_norm(
                self,
                &mut s.x,
                residual,
                &layer.attn_norm,
                &mut s.h,
                &writers(&mut s.acts, &[&layer.wq, &layer.wk, &layer.wv], n, d),
            );
            {
                let acts = &s.acts;
                matmul(
                    &self.pool,
                    &self.kernels,
                    &mut [
                        product(&layer.wq, acts, &mut s.q),
                        product(&layer.wk, acts, &mut s.k),
                        product(&layer.wv, acts, &mut s.v),
                    ],
                );
            }
            {
                let (q, k) = (SharedMut::new(&mut s.q), SharedMut::new(&mut s.k));
                let (cos, sin) = (&s.cos, &s.sin);
                self.pool.split(n, &|rows| {
                    for r in rows {
                        let (cos, sin) = (&cos[r * half..][..half], &sin[r * half..][..half]);
                        // SAFETY: row r of q and k belongs to this thread alone.
                        let (q, k) =
                            unsafe { (q.slice(r * d, (r + 1) * d), k.slice(r * kv_dim, (r + 1) * kv_dim)) };
                        for head in q.chunks_exact_mut(hd).chain(k.chunks_exact_mut(hd)) {
                            rope(head, cos, sin);
                        }
                    }
                });
            }
            // Keys and values join each sequence's cache, rounded to f16.
            let mut r = 0;
            for ch in chunks.iter_mut() {
                let len = ch.tokens.len();
                let (k, v) = (
                    &s.k[r * kv_dim..(r + len) * kv_dim],
                    &s.v[r * kv_dim..(r + len) * kv_dim],
                );
                ch.cache.append(li, k, v);
                r += len;
            }
            {
                let caches: Vec<&KvCache> = chunks.iter().map(|ch| &*ch.cache).collect();
                self.attention(li, &rows, &caches, &s.q, &mut s.att, &mut s.scores, longest);
            }
            self.quantize_for(&mut s.acts, &[&layer.wo], &s.att, d);
            matmul(
                &self.pool,
                &self.kernels,
                &mut [product(&layer.wo, &s.acts, &mut s.o)],
            );
            // Feed-forward.
            add_norm(
                self,
                &mut s.x,
                Some(&s.o),
                &layer.ffn_norm,
                &mut s.h,
                &writers(&mut s.acts, &[&layer.w_gate, &layer.w_up], n, d),
            );
            matmul_pair_then(
                &self.pool,
                &self.kernels,
                product(&layer.w_gate, &s.acts, &mut s.gate),
                product(&layer.w_up, &s.acts, &mut s.up),
                &self.kernels.swiglu,
            );
            self.quantize_for(&mut s.acts, &[&layer.w_down], &s.gate, c.n_ff);
            matmul(
                &self.pool,
                &self.kernels,
                &mut [product(&layer.w_down, &s.acts, &mut s.o)],
            );
        }
        add(&mut s.x, &s.o);
        for ch in chunks.iter_mut() {
            ch.cache.tokens.extend_from_slice(ch.tokens);
        }

        // Logits for the rows asked for.
        let mut picked = Vec::new();
        let mut r = 0;
        for ch in chunks.iter() {
            let len = ch.tokens.len();
            match ch.logits {
                Logits::Last => picked.push(r + len - 1),
                Logits::All => picked.extend(r..r + len),
            }
            r += len;
        }
        let mut last = vec![0.0; picked.len() * d];
        for (dst, &r) in last.chunks_exact_mut(d).zip(&picked) {
            dst.copy_from_slice(&s.x[r * d..(r + 1) * d]);
        }
        let mut h = vec![0.0; last.len()];
        rms_norm(&last, &self.norm, c.rms_eps, &mut h);
        let output = self.output.as_ref().unwrap_or(&self.embed);
        self.quantize_for(&mut s.acts, &[output], &h, d);
        // Written in full by the product: only new length needs a value.
        logits.resize(picked.len() * c.vocab_size, 0.0);
        matmul(&self.pool, &self.kernels, &mut [product(output, &s.acts, logits)]);
    }

    /// Runs `f` on each thread's share of `0..n` (see [`Pool::split`]): for
    /// work on a batch's rows outside the forward pass.
    pub fn for_rows(&self, n: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        self.pool.split(n, f);
    }

    /// Quantizes `x` once for each activation format the matrices need,
    /// the rows shared out among the threads.
    fn quantize_for(&self, acts: &mut [Acts; ACT_SLOTS], matrices: &[&QMatrix], x: &[f32], cols: usize) {
        let n = x.len() / cols;
        let writers = writers(acts, matrices, n, cols);
        self.pool.split(n, &|rows| {
            for r in rows {
                // SAFETY: row r belongs to this thread alone during the step.
                unsafe { write_row(&self.kernels, &writers, r, &x[r * cols..(r + 1) * cols]) };
            }
        });
    }

    /// Causal attention of every row's query heads over its sequence's
    /// cache, split across the threads by (row, head).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        rows: &[(usize, usize)],
        caches: &[&KvCache],
        q: &[f32],
        out: &mut [f32],
        scores: &mut [f32],
        longest: usize,
    ) {
        let c = &self.config;
        let (d, hd) = (c.n_embd, c.head_dim);
        let n_rep = c.n_head / c.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        // Items (row, key/value head) are taken one at a time as threads
        // finish (see `Shares`); an item runs every query head that shares
        // its keys.
        let items = rows.len() * c.n_kv_head;
        let group = n_rep * hd;
        let out = SharedMut::new(out);
        let scores = SharedMut::new(scores);
        let k = &self.kernels;
        let shares = Shares::new(items, self.pool.threads());
        self.pool.run(&|t| {
            // SAFETY: each thread has its own score rows.
            let sc = unsafe { scores.slice(t * n_rep * longest, (t + 1) * n_rep * longest) };
            let (mut qh, mut rounded) = (vec![0.0f32; group], vec![f16::ZERO; group]);
            for item in shares.take(t) {
                let (r, kv_head) = (item / c.n_kv_head, item % c.n_kv_head);
                let (chunk, pos) = rows[r];
                let (keys, values) = caches[chunk].head(layer, kv_head);
                let at = r * d + kv_head * group;
                // ggml multiplies the f16 cache by queries rounded to f16.
                rounded.convert_from_f32_slice(&q[at..][..group]);
                rounded.convert_to_f32_slice(&mut qh);
                // SAFETY: row r's slots for these heads belong to this item alone.
                let y = unsafe { out.slice(at, at + group) };
                (k.attend_shared)(&qh, n_rep, keys, values, hd, pos + 1, scale, sc, y);
            }
        });
    }
}

/// A writer for each activation format the matrices need, for `rows ×
/// cols` values (see [`Acts::writer`]), in its slot.
fn writers<'a>(
    acts: &'a mut [Acts; ACT_SLOTS],
    matrices: &[&QMatrix],
    rows: usize,
    cols: usize,
) -> [Option<ActsWriter<'a>>; ACT_SLOTS] {
    let mut out = [None; ACT_SLOTS];
    for (slot, a) in acts.iter_mut().enumerate() {
        if let Some(m) = matrices.iter().find(|m| act_slot(m.ty.act()) == slot) {
            out[slot] = Some(a.writer(m.ty.act(), rows, cols));
        }
    }
    out
}

/// Quantizes `row` as row `r` through each writer.
///
/// # Safety
/// Row `r` belongs to the calling thread alone during the parallel step.
unsafe fn write_row(k: &Kernels, writers: &[Option<ActsWriter<'_>>], r: usize, row: &[f32]) {
    for w in writers.iter().flatten() {
        // SAFETY: by the caller's promise.
        unsafe { w.write(k, r, row) };
    }
}

fn product<'a>(w: &'a QMatrix, acts: &'a [Acts; ACT_SLOTS], out: &'a mut [f32]) -> Product<'a> {
    Product {
        w,
        acts: &acts[act_slot(w.ty.act())],
        out,
    }
}

/// `x += residual` (when given), then `out = rms_norm(x)`, row by row
/// (rows of `w.len()`), and each row of `out` quantized through `writers`
/// while in cache; the rows shared out among the model's threads.
fn add_norm(
    model: &Llama,
    x: &mut [f32],
    residual: Option<&[f32]>,
    w: &[f32],
    out: &mut [f32],
    writers: &[Option<ActsWriter<'_>>],
) {
    let (d, n) = (w.len(), x.len() / w.len());
    let (x, out) = (SharedMut::new(x), SharedMut::new(out));
    model.pool.split(n, &|rows| {
        let (lo, hi) = (rows.start * d, rows.end * d);
        // SAFETY: these rows belong to this thread alone during the step.
        let (x, out) = unsafe { (x.slice(lo, hi), out.slice(lo, hi)) };
        if let Some(r) = residual {
            add(x, &r[lo..hi]);
        }
        rms_norm(x, w, model.config.rms_eps, out);
        for (r, row) in rows.zip(out.chunks_exact(d)) {
            // SAFETY: as above.
            unsafe { write_row(&model.kernels, writers, r, row) };
        }
    });
}

/// RMS normalization of each row. The squares are summed in f64, in four
/// lanes so that the loop vectorizes (in f64 the order leaves no trace in
/// the f32 scale).
fn rms_norm(x: &[f32], w: &[f32], eps: f64, out: &mut [f32]) {
    let d = w.len();
    for (xs, ys) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mut lanes = [0.0f64; 4];
        let quads = xs.chunks_exact(4);
        for &v in quads.remainder() {
            lanes[0] += v as f64 * v as f64;
        }
        for q in quads {
            for (l, &v) in lanes.iter_mut().zip(q) {
                *l += v as f64 * v as f64;
            }
        }
        let sum: f64 = lanes.iter().sum();
        let scale = (1.0 / (sum / d as f64 + eps).sqrt()) as f32;
        for ((y, &v), &g) in ys.iter_mut().zip(xs).zip(w) {
            *y = v * scale * g;
        }
    }
}

/// Rotary embedding on interleaved pairs (GGUF permutes llama's weights
/// for this layout).
fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Reads tensors: natively supported formats as raw blocks, others
/// expanded to f32 through candle.
struct Loader<'a, R> {
    content: &'a gguf_file::Content,
    reader: &'a mut R,
    path: &'a Path,
    /// Interleave rows by eight where the format allows it (for kernels
    /// that read eight rows at once; same values, same size).
    interleave: bool,
    /// Formats that had to be expanded.
    expanded: Vec<String>,
}

impl<R: std::io::Read + std::io::Seek> Loader<'_, R> {
    fn err(&self, message: String) -> Error {
        Error::Format {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn matrix(&mut self, name: &str) -> Result<QMatrix, Error> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.err(format!("tensor `{name}` is missing")))?;
        let (rows, cols) = info
            .shape
            .dims2()
            .map_err(|_| self.err(format!("tensor `{name}` is not a matrix ({:?})", info.shape)))?;
        match WeightType::from_ggml(info.ggml_dtype) {
            Some(ty) => {
                let (elems, block_bytes) = ty.block();
                if cols % elems != 0 {
                    return Err(self.err(format!(
                        "tensor `{name}`: rows of {cols} are not whole {:?} blocks",
                        info.ggml_dtype
                    )));
                }
                let mut data = Bytes::zeroed(rows * cols / elems * block_bytes);
                let offset = self.content.tensor_data_offset + info.offset;
                let io = |e: std::io::Error| Error::Io {
                    path: self.path.to_path_buf(),
                    source: e,
                };
                self.reader.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
                self.reader.read_exact(data.as_bytes_mut()).map_err(io)?;
                let m = QMatrix::new(ty, rows, cols, data)
                    .map_err(|e| self.err(format!("tensor `{name}`: {e}")))?;
                Ok(if self.interleave { m.interleaved() } else { m })
            }
            None => {
                self.expanded.push(format!("{:?}", info.ggml_dtype));
                let values = self.expand(name)?;
                Ok(QMatrix::from_f32(rows, cols, &values))
            }
        }
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, Error> {
        let values = self.expand(name)?;
        if values.len() != len {
            return Err(self.err(format!(
                "tensor `{name}` has {} values, expected {len}",
                values.len()
            )));
        }
        Ok(values)
    }

    fn expand(&mut self, name: &str) -> Result<Vec<f32>, Error> {
        let t = self
            .content
            .tensor(self.reader, name, &Device::Cpu)
            .map_err(|e| self.err(format!("tensor `{name}`: {e}")))?;
        Ok(t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// `log_softmax` of one row of logits.
pub(crate) fn log_softmax(k: &Kernels, logits: &[f32]) -> Vec<f32> {
    let log_sum = log_sum_exp(k, logits);
    logits.iter().map(|&v| v - log_sum).collect()
}

/// `ln(sum(exp(logits)))`, computed without overflow.
///
/// It runs once per generated token over the whole vocabulary (49,152
/// values for SmolLM2), so the exponentials are computed eight at a time
/// (the kernels' `exp_lanes`: [`crate::cpu::quant::fast_exp`] in SIMD
/// lanes).
pub(crate) fn log_sum_exp(k: &Kernels, logits: &[f32]) -> f32 {
    log_sum_exp_from(k, logits, largest(logits))
}

/// [`log_sum_exp`] given the largest logit (see [`largest`]).
pub(crate) fn log_sum_exp_from(k: &Kernels, logits: &[f32], max: f32) -> f32 {
    if !max.is_finite() {
        return max;
    }
    let whole = logits.len() / 8 * 8;
    let mut tail: f32 = logits[whole..].iter().map(|&v| (v - max).exp()).sum();
    tail += (k.exp_lanes)(&logits[..whole], max).iter().sum::<f32>();
    tail.ln() + max
}

/// The largest value (NaNs are passed over; `-inf` for none), eight lanes
/// at a time, which the compiler vectorises (a running maximum, one value
/// after another, it does not).
pub(crate) fn largest(v: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = l.max(x);
        }
    }
    lanes.iter().fold(tail, |m, &x| m.max(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::quant::fast_exp;

    #[test]
    fn the_fast_exponential_agrees_with_the_exact_one() {
        let mut worst = 0.0f64;
        for i in -100_000..=100_000 {
            let x = i as f32 * 0.00087;
            let (got, want) = (fast_exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "largest relative error {worst}");
        // Outside the range, a negligible positive value or a large finite
        // one, never garbage.
        assert!(fast_exp(-1000.0) > 0.0 && fast_exp(-1000.0) < 2e-38);
        assert!(fast_exp(1000.0).is_finite() && fast_exp(1000.0) > 1e38);
        assert!((fast_exp(88.0) as f64 / 88.0f64.exp() - 1.0).abs() < 3e-7);
        assert_eq!(fast_exp(0.0), 1.0);
        // The log-sum-exp of a vocabulary-sized row against f64 arithmetic.
        let logits: Vec<f32> = (0..49_157)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 40.0)
            .collect();
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let exact = logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        assert!(
            (log_sum_exp(&Kernels::detect(), &logits) as f64 - exact).abs() < 1e-5,
            "{} vs {exact}",
            log_sum_exp(&Kernels::detect(), &logits)
        );
        assert_eq!(
            log_sum_exp(&Kernels::detect(), &[f32::NEG_INFINITY; 3]),
            f32::NEG_INFINITY
        );
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let l = log_softmax(&Kernels::detect(), &[1.0, 2.0, 3.0, -50.0]);
        let total: f32 = l.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(l[2] > l[1] && l[1] > l[0]);
    }

    #[test]
    fn rope_at_position_zero_changes_nothing_and_keeps_norms() {
        let mut h = [1.0, 2.0, 3.0, 4.0];
        rope(&mut h, &[1.0, 1.0], &[0.0, 0.0]);
        assert_eq!(h, [1.0, 2.0, 3.0, 4.0]);
        let (c, s) = (0.3f32.cos(), 0.3f32.sin());
        rope(&mut h, &[c, c], &[s, s]);
        let norm = (h[0] * h[0] + h[1] * h[1]).sqrt();
        assert!((norm - 5f32.sqrt()).abs() < 1e-5);
    }
}
