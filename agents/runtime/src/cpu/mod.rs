//! The CPU arithmetic under the transformer: quantized weight matrices in
//! ggml's block formats, activations quantized to match, dot-product
//! kernels chosen for the CPU at run time, and a thread team that splits
//! each product across cores.
//!
//! Supported weight formats run natively: Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and
//! Q6_K (the formats of the catalog's models and those of the usual files
//! users bring: a Q4_K_M file holds Q4_K and Q6_K matrices, and Q5_0 or
//! Q8_0 where a row is not a whole number of 256-value blocks), and F32.
//! Any other GGUF format is expanded to F32 at load (correct, but larger
//! and slower), and said so in the log.

#[macro_use]
pub mod avx2;
pub mod parity;
pub mod pool;
pub mod quant;
pub mod vnni;

use bytemuck::Pod;
use candle_core::quantized::GgmlDType;
use half::f16;
use half::slice::HalfFloatSliceExt;

use std::sync::OnceLock;

use pool::{Pool, SharedMut, Shares};
use quant::{
    BlockQ4_0, BlockQ4_1, BlockQ4_1x8, BlockQ4K, BlockQ4Kx8, BlockQ5_0, BlockQ5_0x8, BlockQ6K, BlockQ6Kx8,
    BlockQ8_0, BlockQ8_0S, BlockQ8_0x8, BlockQ8_1, BlockQ8K, QK, QK_K,
};

/// Storage format of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    Q4_0,
    Q4_1,
    /// Q4_1 with eight rows interleaved ([`BlockQ4_1x8`]); made at load
    /// for kernels that read eight rows at once, never found in a file.
    Q4_1x8,
    Q8_0,
    /// Q8_0 with eight rows interleaved ([`BlockQ8_0x8`]); made at load.
    Q8_0x8,
    Q5_0,
    /// Q5_0 with eight rows interleaved ([`BlockQ5_0x8`]); made at load.
    Q5_0x8,
    Q4K,
    /// Q4_K with eight rows interleaved ([`BlockQ4Kx8`]); made at load.
    Q4Kx8,
    Q6K,
    /// Q6_K with eight rows interleaved ([`BlockQ6Kx8`]); made at load.
    Q6Kx8,
    F32,
}

/// Format the activations are quantized to for a weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActType {
    Q8_0,
    /// Q8_0 with each block's sum ([`BlockQ8_0S`]), for interleaved Q8_0.
    Q8_0S,
    Q8_1,
    Q8K,
    F32,
}

impl WeightType {
    /// The native format for a GGUF tensor type, if there is one.
    pub fn from_ggml(t: GgmlDType) -> Option<WeightType> {
        Some(match t {
            GgmlDType::Q4_0 => WeightType::Q4_0,
            GgmlDType::Q4_1 => WeightType::Q4_1,
            GgmlDType::Q8_0 => WeightType::Q8_0,
            GgmlDType::Q5_0 => WeightType::Q5_0,
            GgmlDType::Q4K => WeightType::Q4K,
            GgmlDType::Q6K => WeightType::Q6K,
            GgmlDType::F32 => WeightType::F32,
            _ => return None,
        })
    }

    /// Values per block and bytes per block (of all the interleaved rows,
    /// for an interleaved format).
    pub fn block(self) -> (usize, usize) {
        match self {
            WeightType::Q4_0 => (QK, size_of::<BlockQ4_0>()),
            WeightType::Q4_1 => (QK, size_of::<BlockQ4_1>()),
            WeightType::Q4_1x8 => (QK, size_of::<BlockQ4_1x8>()),
            WeightType::Q8_0 => (QK, size_of::<BlockQ8_0>()),
            WeightType::Q8_0x8 => (QK, size_of::<BlockQ8_0x8>()),
            WeightType::Q5_0 => (QK, size_of::<BlockQ5_0>()),
            WeightType::Q5_0x8 => (QK, size_of::<BlockQ5_0x8>()),
            WeightType::Q4K => (QK_K, size_of::<BlockQ4K>()),
            WeightType::Q4Kx8 => (QK_K, size_of::<BlockQ4Kx8>()),
            WeightType::Q6K => (QK_K, size_of::<BlockQ6K>()),
            WeightType::Q6Kx8 => (QK_K, size_of::<BlockQ6Kx8>()),
            WeightType::F32 => (1, 4),
        }
    }

    pub fn act(self) -> ActType {
        match self {
            WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => ActType::Q8_0,
            WeightType::Q8_0x8 | WeightType::Q5_0x8 => ActType::Q8_0S,
            WeightType::Q4_1 | WeightType::Q4_1x8 => ActType::Q8_1,
            WeightType::Q4K | WeightType::Q4Kx8 | WeightType::Q6K | WeightType::Q6Kx8 => ActType::Q8K,
            WeightType::F32 => ActType::F32,
        }
    }

    /// Rows stored together (interleaved), 1 for the plain formats.
    pub fn interleave(self) -> usize {
        match self {
            WeightType::Q4_1x8
            | WeightType::Q8_0x8
            | WeightType::Q5_0x8
            | WeightType::Q4Kx8
            | WeightType::Q6Kx8 => 8,
            _ => 1,
        }
    }
}

impl ActType {
    pub fn block(self) -> (usize, usize) {
        match self {
            ActType::Q8_0 => (QK, size_of::<BlockQ8_0>()),
            ActType::Q8_0S => (QK, size_of::<BlockQ8_0S>()),
            ActType::Q8_1 => (QK, size_of::<BlockQ8_1>()),
            ActType::Q8K => (QK_K, size_of::<BlockQ8K>()),
            ActType::F32 => (1, 4),
        }
    }
}

/// Bytes kept 4-aligned, so that rows cast to block slices.
///
/// Large buffers (the weights of a big matrix: SmolLM2's 30 MB token
/// embedding and output projection) start on a 2 MB boundary and ask the
/// kernel for transparent huge pages, where it offers them on request
/// (Linux's `madvise` mode): a pass over them then needs one TLB entry
/// per 2 MB instead of one per 4 KB. On the Xeon here that made the
/// output projection of a batch of 8, which streams the 30 MB while it
/// computes, 10–20% faster.
#[derive(Debug, Clone, Default)]
pub struct Bytes {
    words: Vec<u32>,
    /// Where the bytes start in `words` (past the padding up to a 2 MB
    /// boundary, for a large buffer).
    start: usize,
    len: usize,
}

/// Buffers of at least this many bytes get huge pages (see [`Bytes`]).
const HUGE_PAGES_FROM: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

impl Bytes {
    pub fn zeroed(len: usize) -> Bytes {
        let n = len.div_ceil(4);
        if len < HUGE_PAGES_FROM {
            return Bytes {
                words: vec![0; n],
                start: 0,
                len,
            };
        }
        // Room to start on a 2 MB boundary (and for `madvise` to round the
        // length up to a page); the padding is never touched, so it costs
        // address space, not memory.
        let mut words: Vec<u32> = Vec::with_capacity(n + (HUGE_PAGE + 4096) / 4);
        let at = words.as_ptr() as usize;
        let start = (at.next_multiple_of(HUGE_PAGE) - at) / 4;
        advise_huge_pages(at + start * 4, n * 4);
        words.resize(start + n, 0);
        Bytes { words, start, len }
    }

    fn resize(&mut self, len: usize) {
        self.words.resize(self.start + len.div_ceil(4), 0);
        self.len = len;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words[self.start..])[..self.len]
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words[self.start..])[..self.len]
    }
}

/// Asks for transparent huge pages over `[at, at + len)` (Linux only; a
/// kernel that has them off, or a refusal, leaves ordinary pages).
fn advise_huge_pages(at: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the range lies inside one live allocation of this
        // process; `MADV_HUGEPAGE` changes how it is backed, never its
        // contents.
        let rc = unsafe { libc::madvise(at as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "no huge pages for the weights");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (at, len);
}

/// A weight matrix of `rows × cols`, row-major, in its block format (for
/// an interleaved format, groups of rows one after another).
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub ty: WeightType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes of one row (of one group of rows when interleaved).
    row_bytes: usize,
    data: Bytes,
}

impl QMatrix {
    /// A matrix over `data` (rows of blocks as in a GGUF file). Fails when
    /// the row length is not a whole number of blocks or `data` has the
    /// wrong size.
    pub fn new(ty: WeightType, rows: usize, cols: usize, data: Bytes) -> Result<QMatrix, String> {
        let (elems, bytes) = ty.block();
        if !cols.is_multiple_of(elems) {
            return Err(format!(
                "rows of {cols} values are not whole blocks of {elems} ({ty:?})"
            ));
        }
        let group = ty.interleave();
        if !rows.is_multiple_of(group) {
            return Err(format!("{rows} rows are not whole groups of {group} ({ty:?})"));
        }
        let row_bytes = cols / elems * bytes;
        if data.len != rows / group * row_bytes {
            return Err(format!(
                "{} bytes for {rows} × {cols} {ty:?} (expected {})",
                data.len,
                rows / group * row_bytes
            ));
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// An F32 matrix from plain values.
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> QMatrix {
        let mut data = Bytes::zeroed(values.len() * 4);
        data.as_bytes_mut().copy_from_slice(bytemuck::cast_slice(values));
        QMatrix::new(WeightType::F32, rows, cols, data).expect("sizes agree")
    }

    /// Stored row `r` (group `r` when interleaved).
    fn row<B: Pod>(&self, r: usize) -> &[B] {
        bytemuck::cast_slice(&self.data.as_bytes()[r * self.row_bytes..(r + 1) * self.row_bytes])
    }

    /// The same matrix with its rows interleaved by eight (Q4_1, Q5_0, Q8_0,
    /// Q4_K and Q6_K),
    /// for the kernels that read eight rows at once; unchanged when the
    /// format or the row count does not allow it. Each group of eight
    /// rows is rearranged where it lies (no second copy of the matrix).
    pub fn interleaved(self) -> QMatrix {
        if !self.rows.is_multiple_of(8) {
            return self;
        }
        match self.ty {
            WeightType::Q4_1 => self.interleave(WeightType::Q4_1x8, BlockQ4_1x8::interleave),
            WeightType::Q8_0 => self.interleave(WeightType::Q8_0x8, BlockQ8_0x8::interleave),
            WeightType::Q5_0 => self.interleave(WeightType::Q5_0x8, BlockQ5_0x8::interleave),
            WeightType::Q4K => self.interleave(WeightType::Q4Kx8, BlockQ4Kx8::interleave),
            WeightType::Q6K => self.interleave(WeightType::Q6Kx8, BlockQ6Kx8::interleave),
            _ => self,
        }
    }

    fn interleave<B: Pod, G: Pod>(mut self, ty: WeightType, group: fn([&B; 8]) -> G) -> QMatrix {
        assert_eq!(size_of::<G>(), 8 * size_of::<B>(), "a group is eight blocks");
        let blocks = self.cols / self.ty.block().0;
        let group_bytes = 8 * self.row_bytes;
        let mut rows = Bytes::zeroed(group_bytes);
        for g in self.data.as_bytes_mut().chunks_exact_mut(group_bytes) {
            rows.as_bytes_mut().copy_from_slice(g);
            let src: &[B] = bytemuck::cast_slice(rows.as_bytes());
            let out: &mut [G] = bytemuck::cast_slice_mut(g);
            for (b, block) in out.iter_mut().enumerate() {
                *block = group(std::array::from_fn(|r| &src[r * blocks + b]));
            }
        }
        QMatrix::new(ty, self.rows, self.cols, self.data).expect("sizes agree")
    }

    /// Row `r`'s blocks, out of its interleaved group.
    fn ungrouped<G: Pod, B>(&self, r: usize, row: fn(&G, usize) -> B) -> Vec<B> {
        quant::ungroup(self.row::<G>(r / 8), r % 8, row)
    }

    /// Expands row `r` into `out` (`cols` values): the embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match self.ty {
            WeightType::Q4_0 => quant::dequantize_q4_0(self.row(r), out),
            WeightType::Q4_1 => quant::dequantize_q4_1(self.row(r), out),
            WeightType::Q4_1x8 => quant::dequantize_q4_1(&self.ungrouped(r, BlockQ4_1x8::row), out),
            WeightType::Q8_0 => quant::dequantize_q8_0(self.row(r), out),
            WeightType::Q8_0x8 => quant::dequantize_q8_0(&self.ungrouped(r, BlockQ8_0x8::row), out),
            WeightType::Q5_0 => quant::dequantize_q5_0(self.row(r), out),
            WeightType::Q5_0x8 => quant::dequantize_q5_0(&self.ungrouped(r, BlockQ5_0x8::row), out),
            WeightType::Q4K => quant::dequantize_q4k(self.row(r), out),
            WeightType::Q4Kx8 => quant::dequantize_q4k(&self.ungrouped(r, BlockQ4Kx8::row), out),
            WeightType::Q6K => quant::dequantize_q6k(self.row(r), out),
            WeightType::Q6Kx8 => quant::dequantize_q6k(&self.ungrouped(r, BlockQ6Kx8::row), out),
            WeightType::F32 => out.copy_from_slice(self.row::<f32>(r)),
        }
    }
}

/// Rows of activations quantized for one weight format.
#[derive(Debug, Default)]
pub struct Acts {
    ty: Option<ActType>,
    rows: usize,
    row_bytes: usize,
    data: Bytes,
}

impl Acts {
    /// Sets the format and size for `rows × cols` values, reusing the
    /// buffer, and returns a writer through which the threads of a
    /// parallel step quantize them as they compute them (in the step that
    /// produces them, rather than a step of its own).
    pub fn writer(&mut self, ty: ActType, rows: usize, cols: usize) -> ActsWriter<'_> {
        let row_bytes = self.shape(ty, rows * cols, cols);
        ActsWriter {
            ty,
            cols,
            row_bytes,
            data: SharedMut::new(self.data.as_bytes_mut()),
            _acts: std::marker::PhantomData,
        }
    }

    /// Quantizes `x` (`rows × cols`) to `ty` with the set's quantizers,
    /// reusing the buffer.
    pub fn quantize(&mut self, k: &Kernels, ty: ActType, x: &[f32], cols: usize) {
        let rb = self.shape(ty, x.len(), cols);
        let data = self.data.as_bytes_mut();
        for (r, xs) in x.chunks_exact(cols).enumerate() {
            quantize_row(k, ty, xs, &mut data[r * rb..(r + 1) * rb]);
        }
    }

    /// Sets the format and size for `len` values in rows of `cols`,
    /// reusing the buffer; returns the bytes per row.
    fn shape(&mut self, ty: ActType, len: usize, cols: usize) -> usize {
        let (elems, bytes) = ty.block();
        assert!(
            cols.is_multiple_of(elems),
            "activation rows of {cols} are not whole blocks of {elems}"
        );
        self.ty = Some(ty);
        self.rows = len / cols;
        self.row_bytes = cols / elems * bytes;
        self.data.resize(self.rows * self.row_bytes);
        self.row_bytes
    }

    #[inline]
    fn row<B: Pod>(&self, r: usize) -> &[B] {
        bytemuck::cast_slice(&self.data.as_bytes()[r * self.row_bytes..(r + 1) * self.row_bytes])
    }
}

/// Quantizes rows into an [`Acts`] from the threads of a parallel step
/// (see [`Acts::writer`]).
#[derive(Debug, Clone, Copy)]
pub struct ActsWriter<'a> {
    ty: ActType,
    cols: usize,
    row_bytes: usize,
    data: SharedMut<u8>,
    _acts: std::marker::PhantomData<&'a mut Acts>,
}

impl ActsWriter<'_> {
    /// Quantizes `xs` as row `r`.
    ///
    /// # Safety
    /// No other thread may write row `r` during the parallel step.
    pub unsafe fn write(&self, k: &Kernels, r: usize, xs: &[f32]) {
        assert_eq!(xs.len(), self.cols, "a row of {} values", self.cols);
        // SAFETY: bounds checked by `slice`; exclusive by the caller's promise.
        let out = unsafe { self.data.slice(r * self.row_bytes, (r + 1) * self.row_bytes) };
        quantize_row(k, self.ty, xs, out);
    }
}

/// One row of activations quantized into `out` (its bytes).
fn quantize_row(k: &Kernels, ty: ActType, xs: &[f32], out: &mut [u8]) {
    match ty {
        ActType::Q8_0 => quant::quantize_q8_0(xs, bytemuck::cast_slice_mut(out)),
        ActType::Q8_0S => quant::quantize_q8_0s(xs, bytemuck::cast_slice_mut(out)),
        ActType::Q8_1 => (k.quantize_q8_1)(xs, bytemuck::cast_slice_mut(out)),
        ActType::Q8K => quant::quantize_q8k(xs, bytemuck::cast_slice_mut(out)),
        ActType::F32 => out.copy_from_slice(bytemuck::cast_slice(xs)),
    }
}

/// Dot-product kernels for one CPU, chosen once at load.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// `avx512vnni`, `avx2` or `portable`.
    pub name: &'static str,
    pub q4_0: fn(&[BlockQ4_0], &[BlockQ8_0]) -> f32,
    pub q4_1: fn(&[BlockQ4_1], &[BlockQ8_1]) -> f32,
    pub q8_0: fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
    pub q5_0: fn(&[BlockQ5_0], &[BlockQ8_0]) -> f32,
    pub q4k: fn(&[BlockQ4K], &[BlockQ8K]) -> f32,
    pub q6k: fn(&[BlockQ6K], &[BlockQ8K]) -> f32,
    pub f32: fn(&[f32], &[f32]) -> f32,
    /// One weight row against four activation rows (the same sums as four
    /// single dot products, with each weight block unpacked once).
    pub q4_0x4: fn(&[BlockQ4_0], [&[BlockQ8_0]; 4]) -> [f32; 4],
    pub q4_1x4: fn(&[BlockQ4_1], [&[BlockQ8_1]; 4]) -> [f32; 4],
    pub q8_0x4: fn(&[BlockQ8_0], [&[BlockQ8_0]; 4]) -> [f32; 4],
    pub q5_0x4: fn(&[BlockQ5_0], [&[BlockQ8_0]; 4]) -> [f32; 4],
    pub q4kx4: fn(&[BlockQ4K], [&[BlockQ8K]; 4]) -> [f32; 4],
    pub q6kx4: fn(&[BlockQ6K], [&[BlockQ8K]; 4]) -> [f32; 4],
    /// Eight interleaved weight rows against one to eight activation rows
    /// (see [`Dot8`]).
    pub q4_1x8: Dot8<BlockQ4_1x8, BlockQ8_1>,
    pub q8_0x8: Dot8<BlockQ8_0x8, BlockQ8_0S>,
    pub q5_0x8: Dot8<BlockQ5_0x8, BlockQ8_0S>,
    pub q4kx8: Dot8<BlockQ4Kx8, BlockQ8K>,
    pub q6kx8: Dot8<BlockQ6Kx8, BlockQ8K>,
    /// Two neighbouring interleaved groups (sixteen weight rows) against
    /// one to eight activation rows, each group's sums exactly the
    /// eight-row kernel's (see [`Dot16`]). One pass in 512-bit vectors with
    /// AVX-512; two eight-row passes elsewhere.
    pub q4_1x16: Dot16<BlockQ4_1x8, BlockQ8_1>,
    pub q8_0x16: Dot16<BlockQ8_0x8, BlockQ8_0S>,
    pub q5_0x16: Dot16<BlockQ5_0x8, BlockQ8_0S>,
    pub q4kx16: Dot16<BlockQ4Kx8, BlockQ8K>,
    pub q6kx16: Dot16<BlockQ6Kx8, BlockQ8K>,
    /// Whether Q4_1, Q5_0, Q8_0, Q4_K and Q6_K weights are interleaved at
    /// load for these kernels (where their eight-row kernels are the faster
    /// ones).
    pub interleave: bool,
    /// One head's attention over a cache (see [`attend`]).
    pub attend: Attend,
    /// Several query heads that share one key and value head (see
    /// [`attend_shared`]).
    pub attend_shared: AttendShared,
    /// Activations for the Q4_1 products: [`quant::quantize_q8_1`]'s bytes
    /// (the vector version with AVX-512).
    pub quantize_q8_1: fn(&[f32], &mut [BlockQ8_1]),
    /// SwiGLU's gate ([`quant::swiglu`]'s values; in 512-bit vectors with
    /// AVX-512).
    pub swiglu: fn(&mut [f32], &[f32]),
    /// Lane sums of `exp(x - max)` for a log-sum-exp
    /// ([`quant::exp_lanes`]'s sums; the exponentials in 512-bit vectors
    /// with AVX-512).
    pub exp_lanes: fn(&[f32], f32) -> [f32; 8],
}

/// `attend_shared(q, heads, keys, values, stride, n, scale, scores, out)`.
pub type AttendShared = fn(&[f32], usize, &[f16], &[f16], usize, usize, f32, &mut [f32], &mut [f32]);

/// [`attend`] for `heads` query heads (one after another in `q` and
/// `out`) over the same keys and values; `scores` holds at least
/// `heads * n` values. Each head gets exactly what [`attend`] gives it.
#[allow(clippy::too_many_arguments)]
pub fn attend_shared(
    q: &[f32],
    heads: usize,
    keys: &[f16],
    values: &[f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    head_by_head(attend, q, heads, keys, values, stride, n, scale, scores, out);
}

/// [`attend_shared`] through a one-head kernel, one head after another.
#[allow(clippy::too_many_arguments)]
fn head_by_head(
    one: Attend,
    q: &[f32],
    heads: usize,
    keys: &[f16],
    values: &[f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len() / heads;
    for (q, out) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
        one(q, keys, values, stride, n, scale, scores, out);
    }
}

/// `attend(q, keys, values, stride, n, scale, scores, out)`.
pub type Attend = fn(&[f32], &[f16], &[f16], usize, usize, f32, &mut [f32], &mut [f32]);

/// One query head's attention over `n` cached positions, with the
/// roundings of llama.cpp's attention (without flash attention, which is
/// what the reference outputs were made with): scores of the query
/// (already rounded to f16) against the f16 keys times `scale`, a softmax
/// summed in f64, probabilities rounded to f16, and their weighted sum of
/// the f16 values. Position `j`'s key and value start at `j * stride`;
/// `scores` is scratch for at least `n` values.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    let scores = &mut scores[..n];
    let mut max = f32::NEG_INFINITY;
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot_f16(&keys[j * stride..][..hd], q) * scale;
        max = max.max(*s);
    }
    softmax_f16(scores, max);
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        axpy_f16(out, p, &values[j * stride..][..hd]);
    }
}

/// Turns attention scores (whose largest is `max`) into probabilities as
/// llama.cpp does: exponentials summed in f64, scaled by the inverse sum,
/// rounded to f16. Shared by every attention kernel.
///
/// Each step runs in SIMD lanes: libm's `expf`, a call per score, and a
/// running sum took half a three-head kernel's time. The exponentials are
/// [`quant::exp_f32`]'s (`expf`'s values); the f64 sum runs eight lanes
/// at a time, which can move its last bit, far below the f32 rounding of
/// its inverse; the f16 roundings go through `half`'s slice conversions.
fn softmax_f16(scores: &mut [f32], max: f32) {
    for s in scores.iter_mut() {
        *s = quant::exp_f32(*s - max);
    }
    let inv = inverse_sum(scores);
    scale_to_f16(scores, inv);
}

/// `1 / Σ scores`, the sum in f64 eight lanes at a time, rounded to f32
/// (the middle of [`softmax_f16`]).
pub(super) fn inverse_sum(scores: &[f32]) -> f32 {
    let chunks = scores.chunks_exact(8);
    let mut sum: f64 = chunks.remainder().iter().map(|&s| s as f64).sum();
    let mut lanes = [0.0f64; 8];
    for c in chunks {
        for (lane, &s) in lanes.iter_mut().zip(c) {
            *lane += s as f64;
        }
    }
    sum += lanes.iter().sum::<f64>();
    (1.0 / sum) as f32
}

/// Each score times `inv`, rounded to f16 (the end of [`softmax_f16`]).
pub(super) fn scale_to_f16(scores: &mut [f32], inv: f32) {
    let mut rounded = [f16::ZERO; 64];
    for c in scores.chunks_mut(64) {
        for s in c.iter_mut() {
            *s *= inv;
        }
        let r = &mut rounded[..c.len()];
        r.convert_from_f32_slice(c);
        r.convert_to_f32_slice(c);
    }
}

impl Kernels {
    /// The plain-Rust kernels, correct on any CPU; the reference the SIMD
    /// kernels are tested against.
    pub const PORTABLE: Kernels = Kernels {
        name: "portable",
        q4_0: quant::dot_q4_0,
        q4_1: quant::dot_q4_1,
        q8_0: quant::dot_q8_0,
        q5_0: quant::dot_q5_0,
        q4k: quant::dot_q4k,
        q6k: quant::dot_q6k,
        f32: quant::dot_f32,
        q4_0x4: |x, y| y.map(|y| quant::dot_q4_0(x, y)),
        q4_1x4: |x, y| y.map(|y| quant::dot_q4_1(x, y)),
        q8_0x4: |x, y| y.map(|y| quant::dot_q8_0(x, y)),
        q5_0x4: |x, y| y.map(|y| quant::dot_q5_0(x, y)),
        q4kx4: |x, y| y.map(|y| quant::dot_q4k(x, y)),
        q6kx4: |x, y| y.map(|y| quant::dot_q6k(x, y)),
        q4_1x8: portable_q4_1x8,
        q8_0x8: portable_q8_0x8,
        q5_0x8: portable_q5_0x8,
        q4kx8: portable_q4kx8,
        q6kx8: portable_q6kx8,
        q4_1x16: |x, y, out| two_groups(portable_q4_1x8, x, y, out),
        q8_0x16: |x, y, out| two_groups(portable_q8_0x8, x, y, out),
        q5_0x16: |x, y, out| two_groups(portable_q5_0x8, x, y, out),
        q4kx16: |x, y, out| two_groups(portable_q4kx8, x, y, out),
        q6kx16: |x, y, out| two_groups(portable_q6kx8, x, y, out),
        interleave: false,
        attend,
        attend_shared,
        quantize_q8_1: quant::quantize_q8_1,
        swiglu: quant::swiglu,
        exp_lanes: quant::exp_lanes,
    };

    /// The kernels for this CPU, chosen once per process: AVX-512 VNNI's
    /// where the CPU has AVX-512 VNNI and they give AVX2's results bit for
    /// bit on the sample blocks of up to seven blocks
    /// ([`parity::same_byte_results_on`], about 10–15 ms), AVX2's where it
    /// has AVX2, FMA and F16C, the portable ones elsewhere.
    /// `TRIAGE_KERNELS` asks for a set: `avx512vnni`, `avx2`, or `portable`
    /// (for comparison and debugging); one the CPU lacks falls back to the
    /// best it has, with a warning.
    pub fn detect() -> Kernels {
        static CHOSEN: OnceLock<Kernels> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let wanted = std::env::var("TRIAGE_KERNELS").unwrap_or_default();
            let (kernels, warning) = Kernels::choose_from(&wanted, Kernels::avx2(), Kernels::avx512vnni());
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            kernels
        })
    }

    /// The set that `TRIAGE_KERNELS=wanted` gives on a CPU with these AVX2
    /// and AVX-512 VNNI sets, with a warning when it is not the one asked
    /// for. The VNNI set is used only if it gives AVX2's results.
    fn choose_from(wanted: &str, avx2: Option<Kernels>, vnni: Option<Kernels>) -> (Kernels, Option<String>) {
        let fallback = avx2.unwrap_or(Kernels::PORTABLE);
        // The VNNI set, checked against AVX2's only where it may be used.
        let checked_vnni = || match (avx2, vnni) {
            (Some(avx2), Some(vnni)) => {
                Some(parity::same_byte_results_on(&avx2, &vnni, &parity::BEFORE_USE).map(|()| vnni))
            }
            _ => None,
        };
        match wanted {
            "portable" => (Kernels::PORTABLE, None),
            "" | "avx512vnni" => match checked_vnni() {
                Some(Ok(k)) => (k, None),
                Some(Err(difference)) => (
                    fallback,
                    Some(format!(
                        "the AVX-512 VNNI kernels differ from AVX2's on this CPU ({difference}); \
                         using the {} kernels. Please report this with the CPU's model name",
                        fallback.name
                    )),
                ),
                None if wanted.is_empty() => (fallback, None),
                None => (
                    fallback,
                    Some(format!(
                        "TRIAGE_KERNELS={wanted}: this CPU lacks AVX-512 VNNI; using the {} kernels",
                        fallback.name
                    )),
                ),
            },
            "avx2" => match avx2 {
                Some(k) => (k, None),
                None => (
                    Kernels::PORTABLE,
                    Some(
                        "TRIAGE_KERNELS=avx2: this CPU lacks AVX2, FMA or F16C; using the portable kernels"
                            .to_string(),
                    ),
                ),
            },
            other => {
                let fastest = match checked_vnni() {
                    Some(Ok(k)) => k,
                    _ => fallback,
                };
                let warning = format!(
                    "TRIAGE_KERNELS={other} is not a kernel set (avx512vnni, avx2 or portable); using the {} kernels",
                    fastest.name
                );
                (fastest, Some(warning))
            }
        }
    }

    /// The AVX-512 VNNI kernels (AVX2's, with `vpdpbusd` for the byte
    /// products; see [`vnni`]), where the CPU has AVX-512 F, BW, VL and
    /// VNNI besides what [`Kernels::avx2`] needs. They are made to give
    /// AVX2's results bit for bit, which the kernel tests check on such a
    /// CPU, and [`Kernels::detect`] checks before it uses them.
    #[cfg(target_arch = "x86_64")]
    pub fn avx512vnni() -> Option<Kernels> {
        let avx2 = Kernels::avx2()?;
        if !(is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni"))
        {
            return None;
        }
        // SAFETY (each wrapper): only reachable after the checks above
        // found every feature the `vnni` kernels need on this CPU.
        fn q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            unsafe { vnni::dot_q4_0(x, y) }
        }
        fn q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            unsafe { vnni::dot_q4_1(x, y) }
        }
        fn q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            unsafe { vnni::dot_q8_0(x, y) }
        }
        fn q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
            unsafe { vnni::dot_q5_0(x, y) }
        }
        fn q5_0x4(x: &[BlockQ5_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
            unsafe { vnni::dot_q5_0_x4(x, y) }
        }
        fn q4_0x4(x: &[BlockQ4_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
            unsafe { vnni::dot_q4_0_x4(x, y) }
        }
        fn q4_1x4(x: &[BlockQ4_1], y: [&[BlockQ8_1]; 4]) -> [f32; 4] {
            unsafe { vnni::dot_q4_1_x4(x, y) }
        }
        fn q8_0x4(x: &[BlockQ8_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
            unsafe { vnni::dot_q8_0_x4(x, y) }
        }
        fn q4_1x8(x: &[BlockQ4_1x8], y: &[&[BlockQ8_1]], out: &mut [[f32; 8]]) {
            unsafe { vnni::dot_q4_1x8(x, y, out) }
        }
        fn q8_0x8(x: &[BlockQ8_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
            unsafe { vnni::dot_q8_0x8(x, y, out) }
        }
        fn q4_1x16(x: [&[BlockQ4_1x8]; 2], y: &[&[BlockQ8_1]], out: &mut [[f32; 16]]) {
            unsafe { vnni::dot_q4_1x16(x, y, out) }
        }
        fn q8_0x16(x: [&[BlockQ8_0x8]; 2], y: &[&[BlockQ8_0S]], out: &mut [[f32; 16]]) {
            unsafe { vnni::dot_q8_0x16(x, y, out) }
        }
        fn q5_0x8(x: &[BlockQ5_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
            unsafe { vnni::dot_q5_0x8(x, y, out) }
        }
        fn q5_0x16(x: [&[BlockQ5_0x8]; 2], y: &[&[BlockQ8_0S]], out: &mut [[f32; 16]]) {
            unsafe { vnni::dot_q5_0x16(x, y, out) }
        }
        fn q4kx8(x: &[BlockQ4Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
            unsafe { vnni::dot_q4kx8(x, y, out) }
        }
        fn q4kx16(x: [&[BlockQ4Kx8]; 2], y: &[&[BlockQ8K]], out: &mut [[f32; 16]]) {
            unsafe { vnni::dot_q4kx16(x, y, out) }
        }
        fn q6kx8(x: &[BlockQ6Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
            unsafe { vnni::dot_q6kx8(x, y, out) }
        }
        fn q6kx16(x: [&[BlockQ6Kx8]; 2], y: &[&[BlockQ8K]], out: &mut [[f32; 16]]) {
            unsafe { vnni::dot_q6kx16(x, y, out) }
        }
        fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
            unsafe { vnni::quantize_q8_1(x, out) }
        }
        fn swiglu(gate: &mut [f32], up: &[f32]) {
            unsafe { vnni::swiglu(gate, up) }
        }
        fn exp_lanes(v: &[f32], max: f32) -> [f32; 8] {
            unsafe { vnni::exp_lanes(v, max) }
        }
        // Q4_K and Q6_K keep AVX2's (their products go through 16-bit
        // scales), F32 has no byte products, and one head's attention gains
        // nothing from wider vectors: AVX2's.
        Some(Kernels {
            name: "avx512vnni",
            q4_0,
            q4_1,
            q8_0,
            q5_0,
            q4_0x4,
            q4_1x4,
            q8_0x4,
            q5_0x4,
            q4_1x8,
            q8_0x8,
            q4_1x16,
            q8_0x16,
            q5_0x8,
            q5_0x16,
            q4kx8,
            q4kx16,
            q6kx8,
            q6kx16,
            attend_shared: attend_shared_vnni,
            quantize_q8_1,
            swiglu,
            exp_lanes,
            ..avx2
        })
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn avx512vnni() -> Option<Kernels> {
        None
    }

    /// The AVX2 kernels, where the CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    pub fn avx2() -> Option<Kernels> {
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return None;
        }
        // SAFETY (each wrapper): only reachable after the check above found
        // AVX2, FMA and F16C on this CPU.
        fn q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            unsafe { avx2::dot_q4_0(x, y) }
        }
        fn q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            unsafe { avx2::dot_q4_1(x, y) }
        }
        fn q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            unsafe { avx2::dot_q8_0(x, y) }
        }
        fn q4k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            unsafe { avx2::dot_q4k(x, y) }
        }
        fn q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
            unsafe { avx2::dot_q5_0(x, y) }
        }
        fn q5_0x4(x: &[BlockQ5_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
            unsafe { avx2::dot_q5_0_x4(x, y) }
        }
        fn q4kx4(x: &[BlockQ4K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            unsafe { avx2::dot_q4k_x4(x, y) }
        }
        fn q6k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            unsafe { avx2::dot_q6k(x, y) }
        }
        fn q6kx4(x: &[BlockQ6K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            unsafe { avx2::dot_q6k_x4(x, y) }
        }
        fn f32(x: &[f32], y: &[f32]) -> f32 {
            unsafe { avx2::dot_f32(x, y) }
        }
        fn q4_0x4(x: &[BlockQ4_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
            unsafe { avx2::dot_q4_0_x4(x, y) }
        }
        fn q4_1x4(x: &[BlockQ4_1], y: [&[BlockQ8_1]; 4]) -> [f32; 4] {
            unsafe { avx2::dot_q4_1_x4(x, y) }
        }
        fn q8_0x4(x: &[BlockQ8_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
            unsafe { avx2::dot_q8_0_x4(x, y) }
        }
        fn q4_1x8(x: &[BlockQ4_1x8], y: &[&[BlockQ8_1]], out: &mut [[f32; 8]]) {
            unsafe { avx2::dot_q4_1x8(x, y, out) }
        }
        fn q8_0x8(x: &[BlockQ8_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
            unsafe { avx2::dot_q8_0x8(x, y, out) }
        }
        fn q4_1x16(x: [&[BlockQ4_1x8]; 2], y: &[&[BlockQ8_1]], out: &mut [[f32; 16]]) {
            two_groups(q4_1x8, x, y, out)
        }
        fn q8_0x16(x: [&[BlockQ8_0x8]; 2], y: &[&[BlockQ8_0S]], out: &mut [[f32; 16]]) {
            two_groups(q8_0x8, x, y, out)
        }
        fn q5_0x8(x: &[BlockQ5_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
            unsafe { avx2::dot_q5_0x8(x, y, out) }
        }
        fn q5_0x16(x: [&[BlockQ5_0x8]; 2], y: &[&[BlockQ8_0S]], out: &mut [[f32; 16]]) {
            two_groups(q5_0x8, x, y, out)
        }
        fn q4kx8(x: &[BlockQ4Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
            unsafe { avx2::dot_q4kx8(x, y, out) }
        }
        fn q4kx16(x: [&[BlockQ4Kx8]; 2], y: &[&[BlockQ8K]], out: &mut [[f32; 16]]) {
            two_groups(q4kx8, x, y, out)
        }
        fn q6kx8(x: &[BlockQ6Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
            unsafe { avx2::dot_q6kx8(x, y, out) }
        }
        fn q6kx16(x: [&[BlockQ6Kx8]; 2], y: &[&[BlockQ8K]], out: &mut [[f32; 16]]) {
            two_groups(q6kx8, x, y, out)
        }
        fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
            unsafe { avx2::quantize_q8_1(x, out) }
        }
        Some(Kernels {
            name: "avx2",
            q4_0,
            q4_1,
            q8_0,
            q5_0,
            q4k,
            q6k,
            f32,
            q4_0x4,
            q4_1x4,
            q8_0x4,
            q5_0x4,
            q4kx4,
            q6kx4,
            q4_1x8,
            q8_0x8,
            q4_1x16,
            q8_0x16,
            q5_0x8,
            q5_0x16,
            q4kx8,
            q4kx16,
            q6kx8,
            q6kx16,
            interleave: true,
            attend: attend_avx2,
            attend_shared: attend_shared_avx2,
            quantize_q8_1,
            swiglu: quant::swiglu,
            exp_lanes: quant::exp_lanes,
        })
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn avx2() -> Option<Kernels> {
        None
    }
}

/// AVX2's attention for one head ([`avx2::attend`] where the head size
/// suits it), for the sets that run on AVX2: only [`Kernels::avx2`] and
/// [`Kernels::avx512vnni`] hand it out, after finding AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn attend_avx2(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    if q.len().is_multiple_of(32) && q.len() <= 256 {
        // SAFETY: see above.
        unsafe { avx2::attend(q, k, v, stride, n, scale, scores, out) }
    } else {
        attend(q, k, v, stride, n, scale, scores, out)
    }
}

/// AVX2's attention for query heads that share their keys and values
/// ([`avx2::attend_3x64`] for three heads of 64); handed out as
/// [`attend_avx2`] is.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn attend_shared_avx2(
    q: &[f32],
    heads: usize,
    k: &[f16],
    v: &[f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    if heads == 3 && q.len() == 3 * 64 {
        // SAFETY: see `attend_avx2`.
        unsafe { avx2::attend_3x64(q, k, v, stride, n, scale, scores, out) }
    } else {
        head_by_head(attend_avx2, q, heads, k, v, stride, n, scale, scores, out);
    }
}

/// [`attend_shared_avx2`] with the 512-bit kernel for three heads of 64
/// ([`vnni::attend_3x64`], the same results bit for bit); handed out only
/// by [`Kernels::avx512vnni`], after finding every feature it needs.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn attend_shared_vnni(
    q: &[f32],
    heads: usize,
    k: &[f16],
    v: &[f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    if heads == 3 && q.len() == 3 * 64 {
        // SAFETY: see above.
        unsafe { vnni::attend_3x64(q, k, v, stride, n, scale, scores, out) }
    } else {
        attend_shared_avx2(q, heads, k, v, stride, n, scale, scores, out);
    }
}

/// One product of a [`matmul`]: `out[t * w.rows + r] = w[r] · acts[t]`.
#[derive(Debug)]
pub struct Product<'a> {
    pub w: &'a QMatrix,
    pub acts: &'a Acts,
    pub out: &'a mut [f32],
}

impl Product<'_> {
    /// Panics unless the activations are in the weights' format and the
    /// output has a place for every product.
    fn check(&self) {
        assert_eq!(
            self.acts.ty,
            Some(self.w.ty.act()),
            "activations quantized for another format"
        );
        assert_eq!(self.out.len(), self.acts.rows * self.w.rows, "output size");
    }
}

/// The most weight rows a thread takes at a time in a [`matmul`]. Small
/// products take smaller chunks (down to 16 rows, a multiple of 16 so that
/// no chunk splits an interleaved group or a pair of them), at least eight
/// per thread, so that when one thread finishes its last chunk the other is
/// never left with much more than a small one.
const CHUNK_ROWS: usize = 64;

/// Rows a thread takes at a time from `total` weight rows (see
/// [`CHUNK_ROWS`]).
fn chunk_rows(total: usize, threads: usize) -> usize {
    (total / (8 * threads) / 16 * 16).clamp(16, CHUNK_ROWS)
}

/// Weight rows handled per tile: a tile's rows stay in L1 while every
/// activation row passes over them.
const TILE_ROWS: usize = 16;

/// Runs several products in one parallel step; the threads share out
/// their rows (fusing, say, the query, key and value projections).
pub fn matmul(pool: &Pool, k: &Kernels, products: &mut [Product<'_>]) {
    products.iter().for_each(Product::check);
    let total: usize = products.iter().map(|p| p.w.rows).sum();
    let jobs: Vec<(&QMatrix, &Acts, SharedMut<f32>)> = products
        .iter_mut()
        .map(|p| (p.w, p.acts, SharedMut::new(p.out)))
        .collect();
    // Threads take chunks of rows as they finish the last one (their own
    // share first), so a thread slowed by the other's memory traffic (or
    // by another process) does not hold the step up.
    let chunk = chunk_rows(total, pool.threads());
    let shares = Shares::new(total.div_ceil(chunk), pool.threads());
    pool.run(&|t| {
        for c in shares.take(t) {
            let (start, end) = (c * chunk, ((c + 1) * chunk).min(total));
            let mut offset = 0;
            for (w, acts, out) in &jobs {
                let (lo, hi) = (start.max(offset), end.min(offset + w.rows));
                if lo < hi {
                    rows(k, w, acts, out, lo - offset, hi - offset);
                }
                offset += w.rows;
            }
        }
    });
}

/// Two products over the same rows (weights of one shape, the same
/// activations), then `then(a, b)` on each share of their outputs: the
/// thread that computed rows `[lo, hi)` of both passes `then` those rows of
/// `a`'s output (to change) and `b`'s, for each activation row in turn,
/// while they are in its cache. SwiGLU's gate and up projections run so,
/// which saves a pass of its own and a wait on the threads per layer (the
/// threads' waits fell from about 7.7% of a batched step to 5.9%).
pub fn matmul_pair_then(
    pool: &Pool,
    k: &Kernels,
    a: Product<'_>,
    b: Product<'_>,
    then: &(dyn Fn(&mut [f32], &[f32]) + Sync),
) {
    assert!(
        a.w.rows == b.w.rows && a.acts.rows == b.acts.rows,
        "a pair of products over the same rows"
    );
    a.check();
    b.check();
    let (rows_n, n) = (a.w.rows, a.acts.rows);
    let (out_a, out_b) = (SharedMut::new(a.out), SharedMut::new(b.out));
    // Chunks of the size `matmul` gives the two products together, halved,
    // as each chunk here covers its rows in both.
    let chunk = (chunk_rows(2 * rows_n, pool.threads()) / 2).next_multiple_of(16);
    let shares = Shares::new(rows_n.div_ceil(chunk), pool.threads());
    pool.run(&|t| {
        for c in shares.take(t) {
            let (lo, hi) = (c * chunk, ((c + 1) * chunk).min(rows_n));
            rows(k, a.w, a.acts, &out_a, lo, hi);
            rows(k, b.w, b.acts, &out_b, lo, hi);
            for r in 0..n {
                let (from, to) = (r * rows_n + lo, r * rows_n + hi);
                // SAFETY: this thread alone owns rows [lo, hi) of every
                // activation row's outputs during this step.
                let (x, y) = unsafe { (out_a.slice(from, to), out_b.slice(from, to)) };
                then(x, y);
            }
        }
    });
}

/// Rows `[lo, hi)` of one product.
fn rows(k: &Kernels, w: &QMatrix, acts: &Acts, out: &SharedMut<f32>, lo: usize, hi: usize) {
    match w.ty {
        WeightType::Q4_0 => tiles(w, acts, out, lo, hi, k.q4_0, Some(k.q4_0x4)),
        WeightType::Q4_1 => tiles(w, acts, out, lo, hi, k.q4_1, Some(k.q4_1x4)),
        WeightType::Q4_1x8 => tiles_x8(w, acts, out, lo, hi, k.q4_1x8, k.q4_1x16),
        WeightType::Q8_0 => tiles(w, acts, out, lo, hi, k.q8_0, Some(k.q8_0x4)),
        WeightType::Q8_0x8 => tiles_x8(w, acts, out, lo, hi, k.q8_0x8, k.q8_0x16),
        WeightType::Q5_0 => tiles(w, acts, out, lo, hi, k.q5_0, Some(k.q5_0x4)),
        WeightType::Q5_0x8 => tiles_x8(w, acts, out, lo, hi, k.q5_0x8, k.q5_0x16),
        WeightType::Q4K => tiles(w, acts, out, lo, hi, k.q4k, Some(k.q4kx4)),
        WeightType::Q4Kx8 => tiles_x8(w, acts, out, lo, hi, k.q4kx8, k.q4kx16),
        WeightType::Q6K => tiles(w, acts, out, lo, hi, k.q6k, Some(k.q6kx4)),
        WeightType::Q6Kx8 => tiles_x8(w, acts, out, lo, hi, k.q6kx8, k.q6kx16),
        WeightType::F32 => tiles(w, acts, out, lo, hi, k.f32, None),
    }
}

/// A dot product of one weight row with one activation row.
pub type Dot<W, A> = fn(&[W], &[A]) -> f32;
/// One weight row against four activation rows.
pub type Dot4<W, A> = fn(&[W], [&[A]; 4]) -> [f32; 4];

fn tiles<W: Pod, A: Pod>(
    w: &QMatrix,
    acts: &Acts,
    out: &SharedMut<f32>,
    lo: usize,
    hi: usize,
    dot: Dot<W, A>,
    dot4: Option<Dot4<W, A>>,
) {
    let mut tile = lo;
    while tile < hi {
        let tile_end = (tile + TILE_ROWS).min(hi);
        let mut t = 0;
        // Four activation rows at a time where the format has a kernel for it.
        if let Some(dot4) = dot4 {
            while t + 4 <= acts.rows {
                let a = std::array::from_fn(|j| acts.row::<A>(t + j));
                for r in tile..tile_end {
                    let sums = dot4(w.row::<W>(r), a);
                    for (j, v) in sums.into_iter().enumerate() {
                        // SAFETY: this thread alone owns rows [lo, hi) of
                        // every activation row's output during this step.
                        unsafe { out.write((t + j) * w.rows + r, v) };
                    }
                }
                t += 4;
            }
        }
        for t in t..acts.rows {
            let a = acts.row::<A>(t);
            for r in tile..tile_end {
                // SAFETY: as above.
                unsafe { out.write(t * w.rows + r, dot(w.row::<W>(r), a)) };
            }
        }
        tile = tile_end;
    }
}

/// [`tiles`] for a matrix of interleaved groups of eight rows: `lo` and
/// `hi` fall on group boundaries. Activation rows pass over a tile eight
/// at a time; the tile's groups go two at a time to `dot16`, a group left
/// over alone to `dot`.
#[allow(clippy::too_many_arguments)]
fn tiles_x8<W: Pod, A: Pod>(
    w: &QMatrix,
    acts: &Acts,
    out: &SharedMut<f32>,
    lo: usize,
    hi: usize,
    dot: Dot8<W, A>,
    dot16: Dot16<W, A>,
) {
    assert!(
        lo.is_multiple_of(8) && hi.is_multiple_of(8),
        "a split inside a group of rows"
    );
    let (n, rows) = (acts.rows, w.rows);
    if n == 0 {
        return;
    }
    // The `m` activation rows of the pass from row `t`; the array's unused
    // slots repeat the last one (only `a[..m]` is passed on). A batch of up
    // to eight is one pass, looked up once rather than once per tile.
    let pass = |t: usize| {
        let m = (n - t).min(8);
        let a: [&[A]; 8] = std::array::from_fn(|j| acts.row::<A>(t + j.min(m - 1)));
        (m, a)
    };
    let first = pass(0);
    let mut sums = [[0.0f32; 16]; 8];
    let mut tile = lo;
    while tile < hi {
        let tile_end = (tile + TILE_ROWS).min(hi);
        for t in (0..n).step_by(8) {
            let (m, a) = if t == 0 { first } else { pass(t) };
            let mut g = tile;
            while g < tile_end {
                let width = if g + 16 <= tile_end {
                    dot16(
                        [w.row::<W>(g / 8), w.row::<W>(g / 8 + 1)],
                        &a[..m],
                        &mut sums[..m],
                    );
                    16
                } else {
                    let mut eight = [[0.0f32; 8]; 8];
                    dot(w.row::<W>(g / 8), &a[..m], &mut eight[..m]);
                    for (s, e) in sums.iter_mut().zip(&eight[..m]) {
                        s[..8].copy_from_slice(e);
                    }
                    8
                };
                for (j, s) in sums[..m].iter().enumerate() {
                    let at = (t + j) * rows + g;
                    // SAFETY: this thread alone owns rows [lo, hi) of every
                    // activation row's output during this step.
                    let dst = unsafe { out.slice(at, at + width) };
                    // Copies of a constant length, which compile to a few
                    // moves rather than a call to `memcpy`.
                    if width == 16 {
                        dst.copy_from_slice(&s[..16]);
                    } else {
                        dst.copy_from_slice(&s[..8]);
                    }
                }
                g += width;
            }
        }
        tile = tile_end;
    }
}

/// Eight interleaved weight rows against one to eight activation rows:
/// `dot(w, acts, out)` sets `out[j]` to the eight sums of `acts[j]`
/// (`acts` and `out` have the same length).
pub type Dot8<W, A> = fn(&[W], &[&[A]], &mut [[f32; 8]]);

/// Two groups of eight interleaved weight rows (`w[0]`'s sums first, then
/// `w[1]`'s) against one to eight activation rows: `dot(w, acts, out)` sets
/// `out[j]` to the sixteen sums of `acts[j]`, each group's exactly what the
/// set's [`Dot8`] gives it.
pub type Dot16<W, A> = fn([&[W]; 2], &[&[A]], &mut [[f32; 16]]);

/// A [`Dot16`] as two passes of an eight-row kernel.
fn two_groups<W, A>(dot: Dot8<W, A>, w: [&[W]; 2], acts: &[&[A]], out: &mut [[f32; 16]]) {
    let mut eight = [[0.0f32; 8]; 8];
    let m = acts.len();
    for (g, w) in w.into_iter().enumerate() {
        dot(w, acts, &mut eight[..m]);
        for (o, e) in out.iter_mut().zip(&eight[..m]) {
            o[8 * g..8 * g + 8].copy_from_slice(e);
        }
    }
}

/// An eight-row kernel made of a plain one, one activation row at a time.
fn each_row<G, A>(dot: fn(&[G], &[A]) -> [f32; 8], x: &[G], y: &[&[A]], out: &mut [[f32; 8]]) {
    for (o, y) in out.iter_mut().zip(y) {
        *o = dot(x, y);
    }
}

fn portable_q4_1x8(x: &[BlockQ4_1x8], y: &[&[BlockQ8_1]], out: &mut [[f32; 8]]) {
    each_row(quant::dot_q4_1x8, x, y, out)
}

fn portable_q4kx8(x: &[BlockQ4Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
    each_row(quant::dot_q4kx8, x, y, out)
}

fn portable_q6kx8(x: &[BlockQ6Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
    each_row(quant::dot_q6kx8, x, y, out)
}

fn portable_q5_0x8(x: &[BlockQ5_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
    each_row(quant::dot_q5_0x8, x, y, out)
}

fn portable_q8_0x8(x: &[BlockQ8_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
    each_row(quant::dot_q8_0x8, x, y, out)
}

/// Dot product of f16 values with f32 values (attention scores).
fn dot_f16(k: &[f16], q: &[f32]) -> f32 {
    k.iter().zip(q).map(|(a, b)| a.to_f32() * b).sum()
}

/// `y += a * v` for f16 `v` (attention's weighted sum of values).
fn axpy_f16(y: &mut [f32], a: f32, v: &[f16]) {
    for (y, v) in y.iter_mut().zip(v) {
        *y += a * v.to_f32();
    }
}

#[cfg(test)]
mod tests;
