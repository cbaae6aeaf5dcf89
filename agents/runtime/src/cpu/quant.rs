//! ggml's block formats, bit for bit as they lie in a GGUF file, and the
//! portable reference code for them: quantizing activations, expanding
//! weights back to f32, and the dot products that the SIMD kernels in
//! [`super::avx2`] must reproduce.
//!
//! A weight row is a run of blocks; each block holds 32 (or 256 for the
//! K-quants) values as small integers with one or two f16 scales. A dot
//! product multiplies a weight row with an activation row quantized to
//! the matching 8-bit format, summing integers inside a block and scaling
//! once per block, as llama.cpp does (so the two agree to rounding).

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Values per block in the 32-value formats.
pub const QK: usize = 32;
/// Values per super-block in the K-quants.
pub const QK_K: usize = 256;

/// 4-bit weights: `x = d * (q - 8)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    /// Value `j` in the low nibble of byte `j`, value `j + 16` in its high nibble.
    pub qs: [u8; QK / 2],
}

/// 4-bit weights with an offset: `x = d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

/// 8-bit values: `x = d * q`. Weights, and the activations of Q4_0 and
/// Q8_0 weights.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// 8-bit activations for Q4_1 weights: `x = d * q`, and `s = d * sum(q)`
/// so that the weights' offset costs one multiply per block.
///
/// ggml stores `d` and `s` as f16. These hold the same f16-rounded values
/// as f32, so that the kernels' inner loops do not convert them for every
/// block (activations live only in memory, never in a file).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; QK],
}

/// Block `b` of eight Q4_1 rows, interleaved (repacked at load for the
/// SIMD kernels): the eight scales and offsets side by side, then the
/// nibbles in four runs of 32 bytes. Run `c` holds, for each row `r` in
/// turn, that row's bytes `4c .. 4c + 4`: low nibbles are its values
/// `4c .. 4c + 4`, high nibbles its values `16 + 4c .. 20 + 4c`. A 32-byte
/// load thus gives four values of each of the eight rows, which one
/// broadcast of four activation bytes multiplies for all eight at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1x8 {
    pub d: [f16; 8],
    pub m: [f16; 8],
    pub qs: [u8; 4 * QK],
}

impl BlockQ4_1x8 {
    /// Interleaves block `b` of each of eight rows.
    pub fn interleave(rows: [&BlockQ4_1; 8]) -> BlockQ4_1x8 {
        let mut out = BlockQ4_1x8 {
            d: rows.map(|b| b.d),
            m: rows.map(|b| b.m),
            qs: [0; 4 * QK],
        };
        for (r, b) in rows.iter().enumerate() {
            for c in 0..4 {
                out.qs[32 * c + 4 * r..][..4].copy_from_slice(&b.qs[4 * c..][..4]);
            }
        }
        out
    }

    /// Row `r`'s block, as it was before interleaving.
    pub fn row(&self, r: usize) -> BlockQ4_1 {
        let mut b = BlockQ4_1 {
            d: self.d[r],
            m: self.m[r],
            qs: [0; QK / 2],
        };
        for c in 0..4 {
            b.qs[4 * c..][..4].copy_from_slice(&self.qs[32 * c + 4 * r..][..4]);
        }
        b
    }
}

/// Q8_0 activations with each block's sum of values, for the interleaved
/// Q8_0 weights ([`BlockQ8_0x8`], stored offset by 128): the sum takes the
/// offset back out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0S {
    pub d: f16,
    /// The sum of `qs` (at most 32 × 128 in size).
    pub sum: i16,
    pub qs: [i8; QK],
}

impl BlockQ8_0S {
    /// The block without its sum.
    pub fn q8_0(&self) -> BlockQ8_0 {
        BlockQ8_0 {
            d: self.d,
            qs: self.qs,
        }
    }
}

/// Block `b` of eight Q8_0 rows, interleaved like [`BlockQ4_1x8`]: the
/// eight scales, then eight runs of 32 bytes; run `c` holds each row's
/// values `4c .. 4c + 4` in turn. The values are stored plus 128 (as
/// unsigned bytes), which is what AVX-512 VNNI's unsigned × signed byte
/// product takes: `w · y = (w + 128) · y - 128 Σy`, with `Σy` from
/// [`BlockQ8_0S`]. Kernels without it flip the top bit back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0x8 {
    pub d: [f16; 8],
    pub qs: [u8; 8 * QK],
}

impl BlockQ8_0x8 {
    /// Interleaves block `b` of each of eight rows.
    pub fn interleave(rows: [&BlockQ8_0; 8]) -> BlockQ8_0x8 {
        let mut out = BlockQ8_0x8 {
            d: rows.map(|b| b.d),
            qs: [0; 8 * QK],
        };
        for (r, b) in rows.iter().enumerate() {
            for c in 0..8 {
                for (o, &q) in out.qs[32 * c + 4 * r..][..4].iter_mut().zip(&b.qs[4 * c..][..4]) {
                    *o = q as u8 ^ 0x80;
                }
            }
        }
        out
    }

    /// Row `r`'s block, as it was before interleaving.
    pub fn row(&self, r: usize) -> BlockQ8_0 {
        let mut b = BlockQ8_0 {
            d: self.d[r],
            qs: [0; QK],
        };
        for c in 0..8 {
            for (q, &o) in b.qs[4 * c..][..4].iter_mut().zip(&self.qs[32 * c + 4 * r..][..4]) {
                *q = (o ^ 0x80) as i8;
            }
        }
        b
    }
}

/// 4-bit K-quant: eight sub-blocks of 32 values, each with a 6-bit scale
/// and a 6-bit min: `x = d * scale_j * q - dmin * min_j`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    /// Sub-blocks `2i` (low nibbles) and `2i + 1` (high nibbles) share
    /// bytes `32i .. 32i + 32`.
    pub qs: [u8; QK_K / 2],
}

/// Block `b` of eight Q4_K rows, interleaved (made at load for the SIMD
/// kernels): the eight `d` and `dmin`, the rows' packed 6-bit scales and
/// mins byte by byte (`scales[k][r]` is byte `k` of row `r`'s twelve),
/// then the nibbles in 32 runs of 32 bytes. Run `t` holds each row's bytes
/// `4t .. 4t + 4` in turn: their low nibbles are values `4(t % 8) ..
/// 4(t % 8) + 4` of sub-block `2(t / 8)`, their high nibbles the same
/// values of sub-block `2(t / 8) + 1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4Kx8 {
    pub d: [f16; 8],
    pub dmin: [f16; 8],
    pub scales: [[u8; 8]; 12],
    pub qs: [u8; 8 * QK_K / 2],
}

impl BlockQ4Kx8 {
    /// Interleaves block `b` of each of eight rows.
    pub fn interleave(rows: [&BlockQ4K; 8]) -> BlockQ4Kx8 {
        let mut out = BlockQ4Kx8 {
            d: rows.map(|b| b.d),
            dmin: rows.map(|b| b.dmin),
            scales: [[0; 8]; 12],
            qs: [0; 8 * QK_K / 2],
        };
        for (r, b) in rows.iter().enumerate() {
            for (k, &byte) in b.scales.iter().enumerate() {
                out.scales[k][r] = byte;
            }
            for t in 0..32 {
                out.qs[32 * t + 4 * r..][..4].copy_from_slice(&b.qs[4 * t..][..4]);
            }
        }
        out
    }

    /// Row `r`'s block, as it was before interleaving.
    pub fn row(&self, r: usize) -> BlockQ4K {
        let mut b = BlockQ4K {
            d: self.d[r],
            dmin: self.dmin[r],
            scales: std::array::from_fn(|k| self.scales[k][r]),
            qs: [0; QK_K / 2],
        };
        for t in 0..32 {
            b.qs[4 * t..][..4].copy_from_slice(&self.qs[32 * t + 4 * r..][..4]);
        }
        b
    }
}

/// Block `b` of eight Q6_K rows, interleaved (made at load for the SIMD
/// kernels): run `t` of `ql` holds each row's bytes `4t .. 4t + 4` of its
/// `ql` in turn, run `u` of `qh` each row's bytes `4u .. 4u + 4` of its
/// `qh`, and `scales[s][r]` is row `r`'s scale of sub-block `s`. Values
/// `128h + 32g + 4m .. + 4` (see [`BlockQ6K`]) of the eight rows then come
/// from `ql` run `16h + 8(g % 2) + m` and `qh` run `8h + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6Kx8 {
    pub ql: [u8; 8 * QK_K / 2],
    pub qh: [u8; 8 * QK_K / 4],
    pub scales: [[i8; 8]; QK_K / 16],
    pub d: [f16; 8],
}

impl BlockQ6Kx8 {
    /// Interleaves block `b` of each of eight rows.
    pub fn interleave(rows: [&BlockQ6K; 8]) -> BlockQ6Kx8 {
        let mut out = BlockQ6Kx8 {
            ql: [0; 8 * QK_K / 2],
            qh: [0; 8 * QK_K / 4],
            scales: [[0; 8]; QK_K / 16],
            d: rows.map(|b| b.d),
        };
        for (r, b) in rows.iter().enumerate() {
            for t in 0..32 {
                out.ql[32 * t + 4 * r..][..4].copy_from_slice(&b.ql[4 * t..][..4]);
            }
            for u in 0..16 {
                out.qh[32 * u + 4 * r..][..4].copy_from_slice(&b.qh[4 * u..][..4]);
            }
            for (s, &scale) in b.scales.iter().enumerate() {
                out.scales[s][r] = scale;
            }
        }
        out
    }

    /// Row `r`'s block, as it was before interleaving.
    pub fn row(&self, r: usize) -> BlockQ6K {
        let mut b = BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: std::array::from_fn(|s| self.scales[s][r]),
            d: self.d[r],
        };
        for t in 0..32 {
            b.ql[4 * t..][..4].copy_from_slice(&self.ql[32 * t + 4 * r..][..4]);
        }
        for u in 0..16 {
            b.qh[4 * u..][..4].copy_from_slice(&self.qh[32 * u + 4 * r..][..4]);
        }
        b
    }
}

/// 8-bit activations for the K-quants, with the sums of each 16 values.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

/// 5-bit weights: `x = d * (q - 16)`. Value `j`'s low four bits are in
/// `qs` as in [`BlockQ4_0`], its fifth bit is bit `j` of `qh` (read as a
/// little-endian u32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

impl BlockQ5_0 {
    /// Value `j`'s `q - 16` (from -16 to 15).
    pub fn value(&self, j: usize) -> i32 {
        let nibble = if j < QK / 2 {
            self.qs[j] & 0x0F
        } else {
            self.qs[j - QK / 2] >> 4
        };
        let high = (u32::from_le_bytes(self.qh) >> j) & 1;
        (nibble as u32 | high << 4) as i32 - 16
    }
}

/// Block `b` of eight Q5_0 rows, interleaved like [`BlockQ4_1x8`] (made at
/// load for the SIMD kernels): the eight scales, the fifth bits in four
/// runs of eight bytes, then the nibbles in four runs of 32 bytes.
/// Nibble run `c` holds each row's bytes `4c .. 4c + 4` in turn: low
/// nibbles are values `4c .. 4c + 4`, high nibbles values `16 + 4c ..
/// 20 + 4c`. Byte `r` of bit run `c` holds row `r`'s fifth bits of the same
/// values: bits 0 to 3 those of the low nibbles, bits 4 to 7 those of the
/// high ones. A value's five bits (`q + 16`, from 0 to 31) come out of one
/// run of each with a few vector steps, for eight rows at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0x8 {
    pub d: [f16; 8],
    pub qh: [u8; 32],
    pub qs: [u8; 4 * QK],
}

impl BlockQ5_0x8 {
    /// Interleaves block `b` of each of eight rows.
    pub fn interleave(rows: [&BlockQ5_0; 8]) -> BlockQ5_0x8 {
        let mut out = BlockQ5_0x8 {
            d: rows.map(|b| b.d),
            qh: [0; 32],
            qs: [0; 4 * QK],
        };
        for (r, b) in rows.iter().enumerate() {
            let high = u32::from_le_bytes(b.qh);
            for c in 0..4 {
                out.qs[32 * c + 4 * r..][..4].copy_from_slice(&b.qs[4 * c..][..4]);
                let bits = |from: usize| (high >> from) as u8 & 0x0F;
                out.qh[8 * c + r] = bits(4 * c) | bits(16 + 4 * c) << 4;
            }
        }
        out
    }

    /// Row `r`'s block, as it was before interleaving.
    pub fn row(&self, r: usize) -> BlockQ5_0 {
        let mut b = BlockQ5_0 {
            d: self.d[r],
            qh: [0; 4],
            qs: [0; QK / 2],
        };
        let mut high = 0u32;
        for c in 0..4 {
            b.qs[4 * c..][..4].copy_from_slice(&self.qs[32 * c + 4 * r..][..4]);
            let bits = self.qh[8 * c + r] as u32;
            high |= (bits & 0x0F) << (4 * c) | (bits >> 4) << (16 + 4 * c);
        }
        b.qh = high.to_le_bytes();
        b
    }
}

/// 6-bit K-quant: sixteen sub-blocks of 16 values, each with a signed 8-bit
/// scale: `x = d * scale_s * (q - 32)`.
///
/// The block is two halves of 128 values. In half `h`, the 32 values from
/// `32g` (`g` = 0..4) have their low four bits in bytes `64h + 32(g % 2) ..`
/// of `ql` (low nibbles for `g` < 2, high nibbles after) and their top two
/// bits in bytes `32h ..` of `qh` (bits `2g` and `2g + 1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

impl BlockQ6K {
    /// Value `v`'s `q` (from 0 to 63, before the offset of 32) and the
    /// scale of its sub-block.
    pub fn value(&self, v: usize) -> (i32, i32) {
        let (h, w) = (v / 128, v % 128);
        let (g, l) = (w / 32, w % 32);
        let low = self.ql[64 * h + 32 * (g % 2) + l];
        let low = if g < 2 { low & 0x0F } else { low >> 4 };
        let high = (self.qh[32 * h + l] >> (2 * g)) & 3;
        ((low | high << 4) as i32, self.scales[v / 16] as i32)
    }
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K block.
pub fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

// ---------------------------------------------------------------------------
// Quantizing activations (f32 → 8-bit blocks).

/// The largest magnitude in `x`. Eight independent running maxima (so the
/// loop vectorizes), then the largest of them: the same value as one
/// running maximum, since taking maxima can be done in any order.
pub(crate) fn amax(x: &[f32]) -> f32 {
    let mut m = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    for v in chunks.remainder() {
        m[0] = m[0].max(v.abs());
    }
    for c in chunks {
        for (m, v) in m.iter_mut().zip(c) {
            *m = m.max(v.abs());
        }
    }
    m.into_iter().fold(0.0, f32::max)
}

/// One block's values times `id`, rounded half away from zero as C's
/// `roundf` rounds them (what llama.cpp's reference uses), written without branches
/// or calls so that the compiler vectorizes it (activations are quantized
/// before every product): the truncated value, plus one step away from
/// zero when the dropped fraction is a half or more. `v - trunc(v)` is
/// exact, so the result is `roundf`'s, tie for tie. The values must lie
/// within ±2²² (quantizing scales them to ±127).
pub(crate) fn round_block(xs: &[f32], id: f32) -> [i32; QK] {
    let mut out = [0i32; QK];
    for (o, &x) in out.iter_mut().zip(xs) {
        let v = x * id;
        let t = v.trunc();
        let step = if (v - t).abs() >= 0.5 {
            1.0f32.copysign(v)
        } else {
            0.0
        };
        *o = integer(t + step);
    }
    out
}

/// A whole number within ±2²² as an integer, without the checks of `as`
/// (which keep the loops above from vectorizing): added to 1.5 × 2²³, it
/// becomes the low bits of the sum's mantissa, exactly.
pub(crate) fn integer(v: f32) -> i32 {
    (v + INTEGER_MAGIC).to_bits() as i32 - INTEGER_MAGIC.to_bits() as i32
}

/// 1.5 × 2^23: its sum with an integral f32 holds that integer in its low
/// bits (see [`integer`]).
pub(crate) const INTEGER_MAGIC: f32 = 12_582_912.0;

/// `exp(x)` to about one unit in the last place: `x = n ln 2 + r` with
/// `|r| <= ln 2 / 2`, a degree-6 Taylor polynomial for `exp(r)` (error
/// below 1.2e-7 relative), scaled by `2^n` through the exponent bits.
/// Written so the compiler turns loops over it into SIMD code. Values below
/// -87 (where `exp` is under 1.7e-38) count as `exp(-87)`, which no sum of
/// probabilities can notice; values above 88 as `exp(88)` (1.65e38; for
/// silu, `x / (1 + exp(88))` is 0 all the same).
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = (x - n * FAST_EXP_LN2_HI) - n * FAST_EXP_LN2_LO;
    let mut p = FAST_EXP_TAYLOR[0];
    for &c in &FAST_EXP_TAYLOR[1..] {
        p = c + r * p;
    }
    // 2^n through the exponent bits. `integer` converts with integer steps
    // the compiler keeps in SIMD lanes, where `n as i32` (which must map
    // NaN to 0) goes lane by lane.
    p * f32::from_bits(((integer(n) + 127) as u32) << 23)
}

/// [`fast_exp`]'s constants (shared with its vector form in
/// [`super::vnni`]): `ln 2` in two parts, ...
pub(crate) const FAST_EXP_LN2_HI: f32 = 0.693_145_75;
pub(crate) const FAST_EXP_LN2_LO: f32 = 1.428_606_8e-6;
/// ... and `1/k!` for k = 6 down to 0, in Horner's order.
pub(crate) const FAST_EXP_TAYLOR: [f32; 7] = [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];

/// SwiGLU's gate: `gate = silu(gate) * up`, element by element, in plain
/// Rust (which the compiler vectorizes); the AVX-512 set has
/// [`super::vnni::swiglu`], which gives the same values.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "a gate value for each up value");
    for (g, u) in gate.iter_mut().zip(up) {
        // silu(g) = g / (1 + exp(-g)); `fast_exp` lets the loop run in
        // SIMD lanes (libm's `expf` is a call per value).
        *g = *g / (1.0 + fast_exp(-*g)) * u;
    }
}

/// The eight lane sums of `exp(x - max)` (`fast_exp`) over `v` in
/// chunks of eight: lane `i` adds values `i`, `i + 8`, ... in order. A row
/// of logits' log-sum-exp is made of them. In plain Rust; the AVX-512 set
/// has [`super::vnni::exp_lanes`], which gives the same sums.
pub fn exp_lanes(v: &[f32], max: f32) -> [f32; 8] {
    assert!(v.len().is_multiple_of(8), "whole chunks of eight");
    let mut lanes = [0.0f32; 8];
    for c in v.chunks_exact(8) {
        for (lane, &x) in lanes.iter_mut().zip(c) {
            *lane += fast_exp(x - max);
        }
    }
    lanes
}

/// `exp(x)` as libm's `expf` gives it, but in SIMD lanes when a loop runs
/// over it: computed in f64 (a degree-11 Taylor polynomial of the
/// remainder after `n ln 2`, good to about 1e-14) and rounded once to
/// f32. That is the correctly rounded value, which `expf` gives too save
/// for rare last-bit cases (the test counts them). For the attention
/// softmax, whose probabilities must round to f16 as llama.cpp's do: an
/// approximation a couple of units off in the last place (like
/// [`fast_exp`]) moves enough of those roundings to change greedy
/// outputs.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // Below -150 the f32 result is 0; above 89 it is infinite.
    let x = (x as f64).clamp(-150.0, 89.0);
    let n = (x * std::f64::consts::LOG2_E + 0.5).floor();
    // n has few bits and EXP_LN2_HI's low 32 are zero: n * EXP_LN2_HI is exact.
    let r = (x - n * EXP_LN2_HI) - n * EXP_LN2_LO;
    let mut p = EXP_TAYLOR[0];
    for &c in &EXP_TAYLOR[1..] {
        p = p.mul_add(r, c);
    }
    // 2^n through the exponent bits (n + 1.5 * 2^52 has n in its low bits).
    let n = (n + EXP_MAGIC).to_bits() as i64 - EXP_MAGIC.to_bits() as i64;
    (p * f64::from_bits(((n + 1023) as u64) << 52)) as f32
}

/// [`exp_f32`]'s constants (shared with its vector form,
/// [`super::vnni::softmax_f16`]): `ln 2` in two parts, ...
pub(crate) const EXP_LN2_HI: f64 = 0.693_146_705_627_441_4;
pub(crate) const EXP_LN2_LO: f64 = 4.749_325_039_031_672_6e-7;
/// ... `1/k!` for k = 11 down to 0, ...
pub(crate) const EXP_TAYLOR: [f64; 12] = [
    2.505210838544172e-8,
    2.755731922398589e-7,
    2.7557319223985893e-6,
    2.48015873015873e-5,
    1.984126984126984e-4,
    1.388888888888889e-3,
    8.333333333333333e-3,
    4.1666666666666664e-2,
    0.16666666666666666,
    0.5,
    1.0,
    1.0,
];
/// ... and 1.5 × 2^52, whose sum with an integral value holds it in its
/// low bits.
pub(crate) const EXP_MAGIC: f64 = 6_755_399_441_055_744.0;

pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (xs, b) in x.chunks_exact(QK).zip(out) {
        (b.d, b.qs) = q8_0_block(xs);
    }
}

/// [`quantize_q8_0`] with each block's sum.
pub fn quantize_q8_0s(x: &[f32], out: &mut [BlockQ8_0S]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (xs, b) in x.chunks_exact(QK).zip(out) {
        (b.d, b.qs) = q8_0_block(xs);
        b.sum = b.qs.iter().map(|&q| q as i16).sum();
    }
}

/// `1 / d`, or 0 where that is not finite: a block of zeros, or of values
/// so small that the scale is subnormal (and rounds to 0 as f16, so the
/// block counts as zeros whatever its bytes), whose values would otherwise
/// scale to infinity.
pub(crate) fn inverse_scale(d: f32) -> f32 {
    let id = 1.0 / d;
    if id.is_finite() { id } else { 0.0 }
}

fn q8_0_block(xs: &[f32]) -> (f16, [i8; QK]) {
    let d = amax(xs) / 127.0;
    let id = inverse_scale(d);
    (f16::from_f32(d), round_block(xs, id).map(|r| r as i8))
}

/// Q8_1 blocks of `x` (activations for the Q4_1 products), in plain Rust
/// (which the compiler vectorizes); the AVX-512 set has
/// [`super::vnni::quantize_q8_1`], which gives the same bytes.
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (xs, b) in x.chunks_exact(QK).zip(out) {
        let d = amax(xs) / 127.0;
        let rounded = round_block(xs, inverse_scale(d));
        for (q, &r) in b.qs.iter_mut().zip(&rounded) {
            *q = r as i8;
        }
        (b.d, b.s) = q8_1_scales(d, rounded.iter().sum());
    }
}

/// A Q8_1 block's two scales from its scale `d` and the sum of its
/// values: `d` and `d × sum`, each rounded to f16 (as ggml stores them)
/// and kept as f32.
pub(crate) fn q8_1_scales(d: f32, sum: i32) -> (f32, f32) {
    (f16::from_f32(d).to_f32(), f16::from_f32(d * sum as f32).to_f32())
}

/// Q8_K blocks of `x` (activations for the K-quant products), written so
/// that the compiler vectorizes it: the largest magnitude first (in any
/// order), then the first value that has it.
pub fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    debug_assert_eq!(x.len(), out.len() * QK_K);
    for (xs, b) in x.chunks_exact(QK_K).zip(out) {
        // The value of largest magnitude, with its sign, maps to -128 (the
        // first of them, as a running comparison keeps it).
        let top = amax(xs);
        let max = xs.iter().copied().find(|v| v.abs() == top).unwrap_or(0.0);
        if max == 0.0 {
            b.d = 0.0;
            b.qs = [0; QK_K];
            b.bsums = [0; QK_K / 16];
            continue;
        }
        let iscale = -128.0 / max;
        for (qs, xs) in b.qs.chunks_exact_mut(QK).zip(xs.chunks_exact(QK)) {
            for (q, r) in qs.iter_mut().zip(round_block(xs, iscale)) {
                *q = r.min(127) as i8;
            }
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

// ---------------------------------------------------------------------------
// Expanding weights (blocks → f32): embedding rows, the f32 fallback, tests.

pub fn dequantize_q4_0(b: &[BlockQ4_0], out: &mut [f32]) {
    for (b, o) in b.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (j, &q) in b.qs.iter().enumerate() {
            o[j] = d * ((q & 0x0F) as i32 - 8) as f32;
            o[j + QK / 2] = d * ((q >> 4) as i32 - 8) as f32;
        }
    }
}

pub fn dequantize_q4_1(b: &[BlockQ4_1], out: &mut [f32]) {
    for (b, o) in b.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (j, &q) in b.qs.iter().enumerate() {
            o[j] = d * (q & 0x0F) as f32 + m;
            o[j + QK / 2] = d * (q >> 4) as f32 + m;
        }
    }
}

pub fn dequantize_q8_0(b: &[BlockQ8_0], out: &mut [f32]) {
    for (b, o) in b.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, &q) in o.iter_mut().zip(&b.qs) {
            *o = d * q as f32;
        }
    }
}

pub fn dequantize_q5_0(b: &[BlockQ5_0], out: &mut [f32]) {
    for (b, o) in b.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (j, o) in o.iter_mut().enumerate() {
            *o = d * b.value(j) as f32;
        }
    }
}

pub fn dequantize_q6k(b: &[BlockQ6K], out: &mut [f32]) {
    for (b, o) in b.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (v, o) in o.iter_mut().enumerate() {
            let (q, scale) = b.value(v);
            *o = d * (scale * (q - 32)) as f32;
        }
    }
}

pub fn dequantize_q4k(b: &[BlockQ4K], out: &mut [f32]) {
    for (b, o) in b.iter().zip(out.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for i in 0..4 {
            let (s1, m1) = scale_min_k4(2 * i, &b.scales);
            let (s2, m2) = scale_min_k4(2 * i + 1, &b.scales);
            let qs = &b.qs[32 * i..32 * i + 32];
            let o = &mut o[64 * i..64 * i + 64];
            for l in 0..32 {
                o[l] = d * s1 as f32 * (qs[l] & 0x0F) as f32 - dmin * m1 as f32;
                o[l + 32] = d * s2 as f32 * (qs[l] >> 4) as f32 - dmin * m2 as f32;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Reference dot products: plain loops, integer sums per block.

pub fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(x, y)| {
            let mut sum = 0i32;
            for j in 0..QK / 2 {
                sum += ((x.qs[j] & 0x0F) as i32 - 8) * y.qs[j] as i32;
                sum += ((x.qs[j] >> 4) as i32 - 8) * y.qs[j + QK / 2] as i32;
            }
            x.d.to_f32() * y.d.to_f32() * sum as f32
        })
        .sum()
}

pub fn dot_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(x, y)| {
            let mut sum = 0i32;
            for j in 0..QK / 2 {
                sum += (x.qs[j] & 0x0F) as i32 * y.qs[j] as i32;
                sum += (x.qs[j] >> 4) as i32 * y.qs[j + QK / 2] as i32;
            }
            x.d.to_f32() * y.d * sum as f32 + x.m.to_f32() * y.s
        })
        .sum()
}

/// Eight interleaved Q4_1 rows against one activation row: each row's
/// dot product, exactly as [`dot_q4_1`] computes it on the row.
pub fn dot_q4_1x8(x: &[BlockQ4_1x8], y: &[BlockQ8_1]) -> [f32; 8] {
    std::array::from_fn(|r| dot_q4_1(&ungroup(x, r, BlockQ4_1x8::row), y))
}

/// Row `r`'s blocks out of a run of interleaved groups (`row` takes one
/// row's block out of a group).
pub fn ungroup<G, B>(x: &[G], r: usize, row: fn(&G, usize) -> B) -> Vec<B> {
    x.iter().map(|g| row(g, r)).collect()
}

/// Eight interleaved Q5_0 rows against one activation row, as
/// [`dot_q5_0`] computes each.
pub fn dot_q5_0x8(x: &[BlockQ5_0x8], y: &[BlockQ8_0S]) -> [f32; 8] {
    let y: Vec<BlockQ8_0> = y.iter().map(BlockQ8_0S::q8_0).collect();
    std::array::from_fn(|r| dot_q5_0(&ungroup(x, r, BlockQ5_0x8::row), &y))
}

/// Eight interleaved Q4_K rows against one activation row, as
/// [`dot_q4k`] computes each.
pub fn dot_q4kx8(x: &[BlockQ4Kx8], y: &[BlockQ8K]) -> [f32; 8] {
    std::array::from_fn(|r| dot_q4k(&ungroup(x, r, BlockQ4Kx8::row), y))
}

/// Eight interleaved Q6_K rows against one activation row, as
/// [`dot_q6k`] computes each.
pub fn dot_q6kx8(x: &[BlockQ6Kx8], y: &[BlockQ8K]) -> [f32; 8] {
    std::array::from_fn(|r| dot_q6k(&ungroup(x, r, BlockQ6Kx8::row), y))
}

/// Eight interleaved Q8_0 rows against one activation row, as
/// [`dot_q8_0`] computes each.
pub fn dot_q8_0x8(x: &[BlockQ8_0x8], y: &[BlockQ8_0S]) -> [f32; 8] {
    let y: Vec<BlockQ8_0> = y.iter().map(BlockQ8_0S::q8_0).collect();
    std::array::from_fn(|r| dot_q8_0(&ungroup(x, r, BlockQ8_0x8::row), &y))
}

pub fn dot_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(x, y)| {
            let sum: i32 = x.qs.iter().zip(&y.qs).map(|(&a, &b)| a as i32 * b as i32).sum();
            x.d.to_f32() * y.d.to_f32() * sum as f32
        })
        .sum()
}

pub fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(x, y)| {
            let sum: i32 = (0..QK).map(|j| x.value(j) * y.qs[j] as i32).sum();
            x.d.to_f32() * y.d.to_f32() * sum as f32
        })
        .sum()
}

/// The Q6_K product: each block's integer sum `Σ scale (q - 32) a`, taken as
/// `Σ scale q a` less `32 Σ scale (sum of a over the sub-block)` (the
/// activations' sums of sixteen), then scaled once.
pub fn dot_q6k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(x, y)| {
            let mut sum = 0i32;
            for (v, &a) in y.qs.iter().enumerate() {
                let (q, scale) = x.value(v);
                sum += scale * q * a as i32;
            }
            x.d.to_f32() * y.d * (sum - 32 * q6k_offsets(x, y)) as f32
        })
        .sum()
}

/// `Σ scale_s × (sum of the activations of sub-block s)` for a Q6_K block:
/// what the offset of 32 takes off its products, over 32.
pub(crate) fn q6k_offsets(x: &BlockQ6K, y: &BlockQ8K) -> i32 {
    x.scales
        .iter()
        .zip(&y.bsums)
        .map(|(&s, &b)| s as i32 * b as i32)
        .sum()
}

pub fn dot_q4k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(x, y)| {
            let mut scaled = 0i32;
            let mut mins = 0i32;
            for j in 0..8 {
                let (scale, min) = scale_min_k4(j, &x.scales);
                let qs = &x.qs[32 * (j / 2)..32 * (j / 2) + 32];
                let a = &y.qs[32 * j..32 * j + 32];
                let shift = if j % 2 == 0 { 0 } else { 4 };
                let sum: i32 = qs
                    .iter()
                    .zip(a)
                    .map(|(&q, &a)| ((q >> shift) & 0x0F) as i32 * a as i32)
                    .sum();
                scaled += scale as i32 * sum;
                mins += min as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
            }
            y.d * (x.d.to_f32() * scaled as f32 - x.dmin.to_f32() * mins as f32)
        })
        .sum()
}

pub fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}
