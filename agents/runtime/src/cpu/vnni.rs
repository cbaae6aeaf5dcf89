//! AVX-512 VNNI dot products for the byte-quantized formats (Q4_0, Q4_1,
//! Q5_0, Q8_0, and their four-, eight- and sixteen-row forms; the
//! interleaved Q4_K and Q6_K).
//!
//! They are [`super::avx2`]'s kernels with one change: `vpdpbusd` sums
//! four unsigned × signed byte products into each 32-bit lane in one
//! instruction, where AVX2 needs `vpmaddubsw` (into 16-bit pairs), then
//! `vpmaddwd` (into 32 bits) or 16-bit adds. Both group the products four
//! bytes to a lane and sum them exactly, so every block's integer sums
//! are the same, and the float arithmetic after them is AVX2's, operation
//! for operation: these kernels are to give AVX2's results bit for bit, so
//! that a model answers the same on either CPU. The kernel tests check it,
//! and check them against the plain reference, on any CPU that has AVX-512
//! VNNI.
//!
//! This project's machines vary: on its Sapphire Rapids Xeons these kernels
//! are the default, and every test runs on them; on its AVX2-only AMD
//! machines, `scripts/test-kernels-in-bochs.sh` runs the kernel tests on an
//! emulated Ice Lake (Bochs 2.7; QEMU does not emulate AVX-512), in CI too.
//! The README gives their speed against AVX2's, as measured.
//! [`super::Kernels::detect`] does not take them on trust: before it uses
//! them, once per process, it checks that they give AVX2's results bit for
//! bit on the kernel tests' sample blocks
//! ([`super::parity::same_byte_results_on`] on the samples of up to seven
//! blocks, about 10–15 ms); a CPU where they do
//! not gets AVX2's kernels and a warning that says where they differed.
//!
//! The block layouts, the interleaved rows and the helpers are AVX2's. The
//! one-row and four-row kernels are AVX2's own source (`byte_kernels!`),
//! expanded here with this module's `mul_sum_us8`, in 256-bit vectors
//! (`AVX512VL`). The eight-row kernels are written out, since AVX2's keep
//! partial sums in 16 bits; here a block's products go to two 32-bit
//! accumulators, so that a single activation row does not wait on one
//! chain of `vpdpbusd` latencies. The sixteen-row kernels are the
//! eight-row ones in 512-bit vectors, one group of eight rows in each half,
//! lane for lane the same arithmetic.
//!
//! One kernel here is not a byte product: attention for three query heads
//! of 64 sharing a key and value head ([`attend_3x64`], SmolLM2's shape),
//! which needs AVX-512F alone but lives with the set that uses it. Its
//! results are AVX2's bit for bit too.
//!
//! Every function here requires AVX2, FMA, F16C, AVX512F, AVX512BW,
//! AVX512VL and AVX512_VNNI; [`super::Kernels::avx512vnni`] hands them out
//! only where the CPU has them all.

use std::arch::x86_64::*;

use super::avx2::{
    broadcast4, four_bytes, hsum, hsum_pairwise, lanes, load32, nibbles, prefetch_ahead, prefetch_position,
    q4k_acts, q4k_add_mins, q4k_finish, q4k_run, q4k_scales8, q5_0_run, q5_0_values, q6k_acts, q6k_at,
    q6k_finish, q6k_run, q6k_scaled, q6k_scales8, sub_sum,
};
use super::quant::{
    self, BlockQ4_0, BlockQ4_1, BlockQ4_1x8, BlockQ4Kx8, BlockQ5_0, BlockQ5_0x8, BlockQ6Kx8, BlockQ8_0,
    BlockQ8_0S, BlockQ8_0x8, BlockQ8_1, BlockQ8K, QK, inverse_scale, q8_1_scales,
};

/// Each 32-bit lane's four unsigned × signed byte products, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn mul_sum_us8(ux: __m256i, sy: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ux, sy))
}

byte_kernels!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    "The CPU must have the features in the module's header."
);

/// Eight interleaved Q4_1 weight rows against one to eight activation
/// rows, as [`super::avx2::dot_q4_1x8`].
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q4_1x8(x: &[BlockQ4_1x8], y: &[&[BlockQ8_1]], out: &mut [[f32; 8]]) {
    by_rows!(q4_1x8_n, x, y, out);
}

/// [`dot_q4_1x8`] for `N` activation rows. Run `c` of a block holds bytes
/// `4c .. 4c + 4` of each of the eight rows, one row per lane: the low
/// nibbles meet activations `4c .. 4c + 4` and the high nibbles
/// activations `16 + 4c .. 20 + 4c`, each half in its own accumulator.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1x8_n<const N: usize>(x: &[BlockQ4_1x8], y: &[&[BlockQ8_1]; N]) -> [[f32; 8]; N] {
    let y: [&[BlockQ8_1]; N] = y.map(|y| &y[..x.len()]);
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, x) in x.iter().enumerate() {
        prefetch_ahead(x);
        let mut s = [[_mm256_setzero_si256(); 2]; N];
        for c in 0..4 {
            // SAFETY: run `c` is 32 readable bytes; no alignment needed.
            let v = unsafe { _mm256_loadu_si256(x.qs[32 * c..].as_ptr().cast()) };
            let (lo, hi) = (
                _mm256_and_si256(v, low),
                _mm256_and_si256(_mm256_srli_epi16(v, 4), low),
            );
            for j in 0..N {
                let q = &y[j][i].qs;
                s[j][0] = _mm256_dpbusd_epi32(s[j][0], lo, broadcast4(q, 4 * c));
                s[j][1] = _mm256_dpbusd_epi32(s[j][1], hi, broadcast4(q, 16 + 4 * c));
            }
        }
        // SAFETY: `d` and `m` are 16 readable bytes each.
        let (dx, mx) = unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(x.m.as_ptr().cast())),
            )
        };
        for j in 0..N {
            let b = &y[j][i];
            let sums = _mm256_cvtepi32_ps(_mm256_add_epi32(s[j][0], s[j][1]));
            acc[j] = _mm256_fmadd_ps(sums, _mm256_mul_ps(dx, _mm256_set1_ps(b.d)), acc[j]);
            acc[j] = _mm256_fmadd_ps(mx, _mm256_set1_ps(b.s), acc[j]);
        }
    }
    acc.map(|a| lanes(a))
}

/// Eight interleaved Q8_0 weight rows against one to eight activation
/// rows, as [`super::avx2::dot_q8_0x8`].
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q8_0x8(x: &[BlockQ8_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
    by_rows!(q8_0x8_n, x, y, out);
}

/// [`dot_q8_0x8`] for `N` activation rows. Run `c` of a block holds
/// values `4c .. 4c + 4` of each row, plus 128: unsigned, as `vpdpbusd`
/// takes them, so each block's sums come out `128 Σy` too large, which
/// the activations' block sums take back off. Even and odd runs go to
/// separate accumulators.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0x8_n<const N: usize>(x: &[BlockQ8_0x8], y: &[&[BlockQ8_0S]; N]) -> [[f32; 8]; N] {
    let y: [&[BlockQ8_0S]; N] = y.map(|y| &y[..x.len()]);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, x) in x.iter().enumerate() {
        prefetch_ahead(x);
        let mut s = [[_mm256_setzero_si256(); 2]; N];
        for c in (0..8).step_by(2) {
            // SAFETY: runs `c` and `c + 1` are 64 readable bytes; no
            // alignment needed.
            let (w0, w1) = unsafe {
                (
                    _mm256_loadu_si256(x.qs[32 * c..].as_ptr().cast()),
                    _mm256_loadu_si256(x.qs[32 * c + 32..].as_ptr().cast()),
                )
            };
            for j in 0..N {
                let q = &y[j][i].qs;
                s[j][0] = _mm256_dpbusd_epi32(s[j][0], w0, broadcast4(q, 4 * c));
                s[j][1] = _mm256_dpbusd_epi32(s[j][1], w1, broadcast4(q, 4 * c + 4));
            }
        }
        // SAFETY: `d` is 16 readable bytes.
        let dx = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())) };
        for j in 0..N {
            acc[j] = offset_block(dx, &y[j][i], s[j], 128, acc[j]);
        }
    }
    acc.map(|a| lanes(a))
}

/// Two neighbouring groups of eight interleaved Q4_1 weight rows (sixteen
/// rows) against one to eight activation rows: `out[j][..8]` gets group
/// `x[0]`'s sums, `out[j][8..]` group `x[1]`'s, each exactly what
/// [`dot_q4_1x8`] gives for its group.
///
/// The 512-bit form: each run of the two groups' blocks fills one vector
/// (group 0 in the low half, group 1 in the high half), so one `vpdpbusd`
/// does the work of two and the per-block scaling covers sixteen rows at
/// once. Every lane's integer sums and float operations are those of the
/// eight-row kernel, in the same order.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q4_1x16(x: [&[BlockQ4_1x8]; 2], y: &[&[BlockQ8_1]], out: &mut [[f32; 16]]) {
    by_rows!(q4_1x16_n, x, y, out);
}

/// [`dot_q4_1x16`] for `N` activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1x16_n<const N: usize>(x: [&[BlockQ4_1x8]; 2], y: &[&[BlockQ8_1]; N]) -> [[f32; 16]; N] {
    let [x0, x1] = x;
    assert_eq!(x0.len(), x1.len(), "two groups of the same length");
    let y: [&[BlockQ8_1]; N] = y.map(|y| &y[..x0.len()]);
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, (a, b)) in x0.iter().zip(x1).enumerate() {
        prefetch_ahead(a);
        prefetch_ahead(b);
        let mut s = [[_mm512_setzero_si512(); 2]; N];
        for c in 0..4 {
            let v = join256(&a.qs[32 * c..][..32], &b.qs[32 * c..][..32]);
            let (lo, hi) = (
                _mm512_and_si512(v, low),
                _mm512_and_si512(_mm512_srli_epi16(v, 4), low),
            );
            for j in 0..N {
                let q = &y[j][i].qs;
                s[j][0] = _mm512_dpbusd_epi32(s[j][0], lo, broadcast4x16(q, 4 * c));
                s[j][1] = _mm512_dpbusd_epi32(s[j][1], hi, broadcast4x16(q, 16 + 4 * c));
            }
        }
        let (dx, mx) = (join_f16(&a.d, &b.d), join_f16(&a.m, &b.m));
        for j in 0..N {
            let b = &y[j][i];
            let sums = _mm512_cvtepi32_ps(_mm512_add_epi32(s[j][0], s[j][1]));
            acc[j] = _mm512_fmadd_ps(sums, _mm512_mul_ps(dx, _mm512_set1_ps(b.d)), acc[j]);
            acc[j] = _mm512_fmadd_ps(mx, _mm512_set1_ps(b.s), acc[j]);
        }
    }
    acc.map(|a| lanes16(a))
}

/// Two neighbouring groups of eight interleaved Q8_0 weight rows against
/// one to eight activation rows, as [`dot_q4_1x16`] (the unsigned weights
/// as in [`dot_q8_0x8`]): each group's sums are exactly what
/// [`dot_q8_0x8`] gives.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q8_0x16(x: [&[BlockQ8_0x8]; 2], y: &[&[BlockQ8_0S]], out: &mut [[f32; 16]]) {
    by_rows!(q8_0x16_n, x, y, out);
}

/// [`dot_q8_0x16`] for `N` activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0x16_n<const N: usize>(x: [&[BlockQ8_0x8]; 2], y: &[&[BlockQ8_0S]; N]) -> [[f32; 16]; N] {
    let [x0, x1] = x;
    assert_eq!(x0.len(), x1.len(), "two groups of the same length");
    let y: [&[BlockQ8_0S]; N] = y.map(|y| &y[..x0.len()]);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, (a, b)) in x0.iter().zip(x1).enumerate() {
        prefetch_ahead(a);
        prefetch_ahead(b);
        let mut s = [[_mm512_setzero_si512(); 2]; N];
        // Runs in pairs, even ones to the first accumulator (written out
        // so that the accumulators stay in registers).
        for c in (0..8).step_by(2) {
            let w0 = join256(&a.qs[32 * c..][..32], &b.qs[32 * c..][..32]);
            let w1 = join256(&a.qs[32 * c + 32..][..32], &b.qs[32 * c + 32..][..32]);
            for j in 0..N {
                let q = &y[j][i].qs;
                s[j][0] = _mm512_dpbusd_epi32(s[j][0], w0, broadcast4x16(q, 4 * c));
                s[j][1] = _mm512_dpbusd_epi32(s[j][1], w1, broadcast4x16(q, 4 * c + 4));
            }
        }
        let dx = join_f16(&a.d, &b.d);
        for j in 0..N {
            acc[j] = offset_block16(dx, &y[j][i], s[j], 128, acc[j]);
        }
    }
    acc.map(|a| lanes16(a))
}

/// Eight interleaved Q5_0 weight rows against one to eight activation
/// rows, as [`super::avx2::dot_q5_0x8`].
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q5_0x8(x: &[BlockQ5_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
    by_rows!(q5_0x8_n, x, y, out);
}

/// [`dot_q5_0x8`] for `N` activation rows: each run's two products in
/// their own accumulators, as [`q4_1x8_n`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0x8_n<const N: usize>(x: &[BlockQ5_0x8], y: &[&[BlockQ8_0S]; N]) -> [[f32; 8]; N] {
    let y: [&[BlockQ8_0S]; N] = y.map(|y| &y[..x.len()]);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, x) in x.iter().enumerate() {
        prefetch_ahead(x);
        let mut s = [[_mm256_setzero_si256(); 2]; N];
        for c in 0..4 {
            let (lo, hi) = q5_0_run(x, c);
            for j in 0..N {
                let q = &y[j][i].qs;
                s[j][0] = _mm256_dpbusd_epi32(s[j][0], lo, broadcast4(q, 4 * c));
                s[j][1] = _mm256_dpbusd_epi32(s[j][1], hi, broadcast4(q, 16 + 4 * c));
            }
        }
        // SAFETY: `d` is 16 readable bytes.
        let dx = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())) };
        for j in 0..N {
            acc[j] = offset_block(dx, &y[j][i], s[j], 16, acc[j]);
        }
    }
    acc.map(|a| lanes(a))
}

/// Two neighbouring groups of eight interleaved Q5_0 weight rows against
/// one to eight activation rows, as [`dot_q4_1x16`]: each group's sums
/// are exactly what [`dot_q5_0x8`] gives.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q5_0x16(x: [&[BlockQ5_0x8]; 2], y: &[&[BlockQ8_0S]], out: &mut [[f32; 16]]) {
    by_rows!(q5_0x16_n, x, y, out);
}

/// [`dot_q5_0x16`] for `N` activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0x16_n<const N: usize>(x: [&[BlockQ5_0x8]; 2], y: &[&[BlockQ8_0S]; N]) -> [[f32; 16]; N] {
    let [x0, x1] = x;
    assert_eq!(x0.len(), x1.len(), "two groups of the same length");
    let y: [&[BlockQ8_0S]; N] = y.map(|y| &y[..x0.len()]);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, (a, b)) in x0.iter().zip(x1).enumerate() {
        prefetch_ahead(a);
        prefetch_ahead(b);
        let mut s = [[_mm512_setzero_si512(); 2]; N];
        for c in 0..4 {
            let ((alo, ahi), (blo, bhi)) = (q5_0_run(a, c), q5_0_run(b, c));
            let (lo, hi) = (join(alo, blo), join(ahi, bhi));
            for j in 0..N {
                let q = &y[j][i].qs;
                s[j][0] = _mm512_dpbusd_epi32(s[j][0], lo, broadcast4x16(q, 4 * c));
                s[j][1] = _mm512_dpbusd_epi32(s[j][1], hi, broadcast4x16(q, 16 + 4 * c));
            }
        }
        let dx = join_f16(&a.d, &b.d);
        for j in 0..N {
            acc[j] = offset_block16(dx, &y[j][i], s[j], 16, acc[j]);
        }
    }
    acc.map(|a| lanes16(a))
}

/// Eight interleaved Q4_K weight rows against one to eight activation
/// rows, as [`super::avx2::dot_q4kx8`]: a sub-block's products in one
/// `vpdpbusd` chain per activation row.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q4kx8(x: &[BlockQ4Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
    by_rows!(q4kx8_n, x, y, out);
}

/// [`dot_q4kx8`] for `N` activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4kx8_n<const N: usize>(x: &[BlockQ4Kx8], y: &[&[BlockQ8K]; N]) -> [[f32; 8]; N] {
    let y: [&[BlockQ8K]; N] = y.map(|y| &y[..x.len()]);
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, x) in x.iter().enumerate() {
        prefetch_ahead(x);
        let mut sums = [_mm256_setzero_si256(); N];
        let mut mins = [_mm256_setzero_si256(); N];
        for sub in 0..8 {
            let (scale, min) = q4k_scales8(x, sub);
            let mut dot = [_mm256_setzero_si256(); N];
            for m in 0..8 {
                let q = q4k_run(x, sub, m, low);
                for j in 0..N {
                    dot[j] = _mm256_dpbusd_epi32(dot[j], q, broadcast4(q4k_acts(&y[j][i], sub), 4 * m));
                }
            }
            for j in 0..N {
                sums[j] = _mm256_add_epi32(sums[j], _mm256_mullo_epi32(dot[j], scale));
                mins[j] = q4k_add_mins(mins[j], min, &y[j][i], sub);
            }
        }
        for j in 0..N {
            acc[j] = q4k_finish(x, y[j][i].d, sums[j], mins[j], acc[j]);
        }
    }
    acc.map(|a| lanes(a))
}

/// Two neighbouring groups of eight interleaved Q4_K weight rows against
/// one to eight activation rows, as [`dot_q4_1x16`]: each group's sums
/// are exactly what [`dot_q4kx8`] gives.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q4kx16(x: [&[BlockQ4Kx8]; 2], y: &[&[BlockQ8K]], out: &mut [[f32; 16]]) {
    by_rows!(q4kx16_n, x, y, out);
}

/// [`dot_q4kx16`] for `N` activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4kx16_n<const N: usize>(x: [&[BlockQ4Kx8]; 2], y: &[&[BlockQ8K]; N]) -> [[f32; 16]; N] {
    let [x0, x1] = x;
    assert_eq!(x0.len(), x1.len(), "two groups of the same length");
    let y: [&[BlockQ8K]; N] = y.map(|y| &y[..x0.len()]);
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, (a, b)) in x0.iter().zip(x1).enumerate() {
        prefetch_ahead(a);
        prefetch_ahead(b);
        let mut sums = [_mm512_setzero_si512(); N];
        let mut mins = [_mm512_setzero_si512(); N];
        for sub in 0..8 {
            let ((sa, ma), (sb, mb)) = (q4k_scales8(a, sub), q4k_scales8(b, sub));
            let (scale, min) = (join(sa, sb), join(ma, mb));
            let mut dot = [_mm512_setzero_si512(); N];
            for m in 0..8 {
                let q = join(q4k_run(a, sub, m, low), q4k_run(b, sub, m, low));
                for j in 0..N {
                    dot[j] = _mm512_dpbusd_epi32(dot[j], q, broadcast4x16(q4k_acts(&y[j][i], sub), 4 * m));
                }
            }
            for j in 0..N {
                // As `q4k_add_mins`, in 512-bit lanes.
                let ysum = _mm512_set1_epi32(sub_sum(&y[j][i], sub));
                sums[j] = _mm512_add_epi32(sums[j], _mm512_mullo_epi32(dot[j], scale));
                mins[j] = _mm512_add_epi32(mins[j], _mm512_madd_epi16(min, ysum));
            }
        }
        // `q4k_finish`'s float steps, lane for lane.
        let (d, dmin) = (join_f16(&a.d, &b.d), join_f16(&a.dmin, &b.dmin));
        for j in 0..N {
            let yd = _mm512_set1_ps(y[j][i].d);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[j]), _mm512_mul_ps(d, yd), acc[j]);
            acc[j] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins[j]), _mm512_mul_ps(dmin, yd), acc[j]);
        }
    }
    acc.map(|a| lanes16(a))
}

/// Eight interleaved Q6_K weight rows against one to eight activation
/// rows, as [`super::avx2::dot_q6kx8`].
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q6kx8(x: &[BlockQ6Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
    by_rows!(q6kx8_n, x, y, out);
}

/// [`dot_q6kx8`] for `N` activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q6kx8_n<const N: usize>(x: &[BlockQ6Kx8], y: &[&[BlockQ8K]; N]) -> [[f32; 8]; N] {
    let y: [&[BlockQ8K]; N] = y.map(|y| &y[..x.len()]);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, x) in x.iter().enumerate() {
        prefetch_ahead(x);
        let mut sums = [_mm256_setzero_si256(); N];
        for sub in 0..16 {
            let mut dot = [_mm256_setzero_si256(); N];
            for m in 0..4 {
                let q = q6k_run(x, sub, m);
                for j in 0..N {
                    dot[j] =
                        _mm256_dpbusd_epi32(dot[j], q, broadcast4(q6k_acts(&y[j][i], sub), q6k_at(sub, m)));
                }
            }
            let scale = q6k_scales8(x, sub);
            for j in 0..N {
                sums[j] = q6k_scaled(sums[j], dot[j], scale, &y[j][i], sub);
            }
        }
        for j in 0..N {
            acc[j] = q6k_finish(x, y[j][i].d, sums[j], acc[j]);
        }
    }
    acc.map(|a| lanes(a))
}

/// Two neighbouring groups of eight interleaved Q6_K weight rows against
/// one to eight activation rows, as [`dot_q4_1x16`]: each group's sums
/// are exactly what [`dot_q6kx8`] gives.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_q6kx16(x: [&[BlockQ6Kx8]; 2], y: &[&[BlockQ8K]], out: &mut [[f32; 16]]) {
    by_rows!(q6kx16_n, x, y, out);
}

/// [`dot_q6kx16`] for `N` activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q6kx16_n<const N: usize>(x: [&[BlockQ6Kx8]; 2], y: &[&[BlockQ8K]; N]) -> [[f32; 16]; N] {
    let [x0, x1] = x;
    assert_eq!(x0.len(), x1.len(), "two groups of the same length");
    let y: [&[BlockQ8K]; N] = y.map(|y| &y[..x0.len()]);
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, (a, b)) in x0.iter().zip(x1).enumerate() {
        prefetch_ahead(a);
        prefetch_ahead(b);
        let mut sums = [_mm512_setzero_si512(); N];
        for sub in 0..16 {
            let mut dot = [_mm512_setzero_si512(); N];
            for m in 0..4 {
                let q = join(q6k_run(a, sub, m), q6k_run(b, sub, m));
                for j in 0..N {
                    let acts = broadcast4x16(q6k_acts(&y[j][i], sub), q6k_at(sub, m));
                    dot[j] = _mm512_dpbusd_epi32(dot[j], q, acts);
                }
            }
            let scale = join(q6k_scales8(a, sub), q6k_scales8(b, sub));
            for j in 0..N {
                let offset = _mm512_set1_epi32(32 * y[j][i].bsums[sub] as i32);
                let scaled = _mm512_mullo_epi32(_mm512_sub_epi32(dot[j], offset), scale);
                sums[j] = _mm512_add_epi32(sums[j], scaled);
            }
        }
        let d = join_f16(&a.d, &b.d);
        for j in 0..N {
            let yd = _mm512_set1_ps(y[j][i].d);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[j]), _mm512_mul_ps(d, yd), acc[j]);
        }
    }
    acc.map(|a| lanes16(a))
}

/// Two 256-bit vectors as one, `lo` in the low half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// 32 bytes from each of two places, `lo` in the low half of the vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn join256(lo: &[u8], hi: &[u8]) -> __m512i {
    assert!(lo.len() == 32 && hi.len() == 32);
    // SAFETY: each slice is 32 readable bytes; no alignment needed.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(lo.as_ptr().cast())),
            _mm256_loadu_si256(hi.as_ptr().cast()),
        )
    }
}

/// Two groups' eight f16 scales as sixteen f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn join_f16(lo: &[half::f16; 8], hi: &[half::f16; 8]) -> __m512 {
    // SAFETY: each array is 16 readable bytes; no alignment needed.
    unsafe {
        _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(lo.as_ptr().cast())),
            _mm_loadu_si128(hi.as_ptr().cast()),
        ))
    }
}

/// Activation bytes `at .. at + 4` in every 32-bit lane of a 512-bit vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn broadcast4x16(qs: &[i8; 32], at: usize) -> __m512i {
    _mm512_set1_epi32(four_bytes(qs, at))
}

/// One block's sums of weights stored plus `offset` (two accumulators),
/// less `offset` times the activations' sum, scaled by the weights' `dx`
/// and the activations' scale into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn offset_block(dx: __m256, y: &BlockQ8_0S, s: [__m256i; 2], offset: i32, acc: __m256) -> __m256 {
    let d = _mm256_mul_ps(dx, _mm256_set1_ps(y.d.to_f32()));
    let sums = _mm256_sub_epi32(
        _mm256_add_epi32(s[0], s[1]),
        _mm256_set1_epi32(offset * y.sum as i32),
    );
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc)
}

/// [`offset_block`] for two groups' sixteen lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn offset_block16(dx: __m512, y: &BlockQ8_0S, s: [__m512i; 2], offset: i32, acc: __m512) -> __m512 {
    let d = _mm512_mul_ps(dx, _mm512_set1_ps(y.d.to_f32()));
    let sums = _mm512_sub_epi32(
        _mm512_add_epi32(s[0], s[1]),
        _mm512_set1_epi32(offset * y.sum as i32),
    );
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), d, acc)
}

/// Sixteen lanes of f32 as an array.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn lanes16(v: __m512) -> [f32; 16] {
    let mut out = [0.0f32; 16];
    // SAFETY: `out` is sixteen writable f32.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// [`super::avx2::attend_3x64`] in 512-bit vectors: three query heads of
/// size 64 that share one key and value head, each head's result exactly
/// what [`super::avx2::attend`] gives it alone.
///
/// A 64-value key widens into four vectors instead of eight, and each
/// head's score takes four `vfmadd` instead of eight: vector `r` holds
/// the AVX2 kernel's registers `2r` and `2r + 1` side by side, so two
/// accumulators hold its four (`r % 4`) in the same order, and their sum
/// is its pairwise sum of them. The horizontal sums then run eight
/// positions at a time, transposed: two `vhaddps` rounds give each
/// position ggml's order (the halves added, then pairwise), as the AVX2
/// kernel's `hsum_pairwise` does one at a time. Each head's weighted sum
/// of the values lives in four registers, so the three heads take one
/// pass.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub fn attend_3x64(
    q: &[f32],
    keys: &[half::f16],
    values: &[half::f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    const G: usize = 3;
    assert!(q.len() == G * 64 && out.len() == G * 64 && scores.len() >= G * n);
    assert!(n == 0 || (n - 1) * stride + 64 <= keys.len().min(values.len()));
    let (kp, vp) = (keys.as_ptr(), values.as_ptr());
    // SAFETY: 16r + 16 <= 64 within each head's 64 values of `q`.
    let qv: [[__m512; 4]; G] = std::array::from_fn(|h| {
        std::array::from_fn(|r| unsafe { _mm512_loadu_ps(q[64 * h + 16 * r..].as_ptr()) })
    });
    let lanes = |j: usize| score_lanes(&qv, kp, vp, j * stride, stride);
    let (s0, rest) = scores[..G * n].split_at_mut(n);
    let (s1, s2) = rest.split_at_mut(n);
    let mut heads = [s0, s1, s2];
    let scale8 = _mm256_set1_ps(scale);
    let mut max8 = [_mm256_set1_ps(f32::NEG_INFINITY); G];
    // The transposed sums come out in the order 0 2 4 6 1 3 5 7.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let full = n / 8 * 8;
    for j in (0..full).step_by(8) {
        let mut v = [[_mm256_setzero_ps(); G]; 8];
        for (p, v) in v.iter_mut().enumerate() {
            *v = lanes(j + p);
        }
        for (h, s) in heads.iter_mut().enumerate() {
            // Each position's halves added: positions 2i and 2i + 1 in one vector.
            let half = |a: __m256, b: __m256| {
                _mm256_add_ps(
                    _mm256_permute2f128_ps::<0x20>(a, b),
                    _mm256_permute2f128_ps::<0x31>(a, b),
                )
            };
            let u: [__m256; 4] = std::array::from_fn(|i| half(v[2 * i][h], v[2 * i + 1][h]));
            let x = _mm256_hadd_ps(u[0], u[1]);
            let y = _mm256_hadd_ps(u[2], u[3]);
            let sums = _mm256_permutevar8x32_ps(_mm256_hadd_ps(x, y), order);
            let sums = _mm256_mul_ps(sums, scale8);
            max8[h] = _mm256_max_ps(max8[h], sums);
            // SAFETY: j + 8 <= full <= n = s.len().
            unsafe { _mm256_storeu_ps(s.as_mut_ptr().add(j), sums) };
        }
    }
    let mut max: [f32; G] = std::array::from_fn(|h| lanes8_max(max8[h]));
    for j in full..n {
        let v = lanes(j);
        for (h, s) in heads.iter_mut().enumerate() {
            s[j] = hsum_pairwise(v[h]) * scale;
            max[h] = max[h].max(s[j]);
        }
    }
    for (s, &max) in heads.iter_mut().zip(&max) {
        softmax_f16(s, max);
    }
    let mut acc = [[_mm512_setzero_ps(); 4]; G];
    let [s0, s1, s2] = &heads;
    for (j, ((&p0, &p1), &p2)) in s0.iter().zip(s1.iter()).zip(s2.iter()).enumerate() {
        let base = j * stride;
        let p = [p0, p1, p2].map(|p| _mm512_set1_ps(p));
        for r in 0..4 {
            // SAFETY: base + 16r + 16 <= base + 64 <= values.len().
            let v = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(vp.add(base + 16 * r).cast())) };
            for (acc, &p) in acc.iter_mut().zip(&p) {
                acc[r] = _mm512_fmadd_ps(p, v, acc[r]);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        for (r, a) in acc.iter().enumerate() {
            // SAFETY: 64h + 16r + 16 <= 192 = out.len().
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(64 * h + 16 * r), *a) };
        }
    }
}

/// The three heads' score vectors for the key at `base`, before the
/// horizontal sum: the AVX2 kernel's `(l0 + l2) + (l1 + l3)` (see
/// [`attend_3x64`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn score_lanes(
    qv: &[[__m512; 4]; 3],
    kp: *const half::f16,
    vp: *const half::f16,
    base: usize,
    stride: usize,
) -> [__m256; 3] {
    prefetch_position(kp, vp, base, stride, 64);
    let zero = _mm512_setzero_ps();
    let mut k = [zero; 4];
    for (r, k) in k.iter_mut().enumerate() {
        // SAFETY: the caller's `base + 64 <= keys.len()`.
        *k = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(kp.add(base + 16 * r).cast())) };
    }
    let mut out = [_mm256_setzero_ps(); 3];
    for (o, qh) in out.iter_mut().zip(qv) {
        let z0 = _mm512_fmadd_ps(k[2], qh[2], _mm512_fmadd_ps(k[0], qh[0], zero));
        let z1 = _mm512_fmadd_ps(k[3], qh[3], _mm512_fmadd_ps(k[1], qh[1], zero));
        let z = _mm512_add_ps(z0, z1);
        *o = _mm256_add_ps(
            _mm512_castps512_ps256(z),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(z))),
        );
    }
    out
}

/// The largest of eight lanes (for scores, where the order does not matter).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn lanes8_max(v: __m256) -> f32 {
    lanes(v).into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// [`super::quant::quantize_q8_1`] in 512-bit vectors, block for
/// block the same bytes: the largest magnitude, the values over the scale
/// rounded half away from zero (the truncated value, plus one step away
/// from zero where the dropped fraction is a half or more, as
/// the plain code's `round_block` does), narrowed to bytes, and their sum.
/// Activations are quantized before every product, several hundred
/// thousand values a batched step.
///
/// Sixteen blocks go at a time: their largest magnitudes and their sums
/// are reduced together (`reduce16!`), one block to a lane, and their
/// scales computed in one vector, where a block on its own reduces twice
/// across a vector and computes its scales lane by lane. The rest (fewer
/// than sixteen) go one at a time. Maxima and integer sums are exact in
/// any order, and the scales' divisions and f16 roundings are the same
/// IEEE operations in a lane as alone, so the bytes are the same.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * QK, "one block per 32 values");
    let whole = out.len() / 16 * 16;
    let (x16, rest) = x.split_at(whole * QK);
    let (out16, out_rest) = out.split_at_mut(whole);
    for (xs, bs) in x16.chunks_exact(16 * QK).zip(out16.chunks_exact_mut(16)) {
        q8_1_sixteen(xs, bs);
    }
    for (xs, b) in rest.chunks_exact(QK).zip(out_rest) {
        let v = load_block(xs);
        let d = _mm512_reduce_max_ps(_mm512_max_ps(magnitude(v[0]), magnitude(v[1]))) / 127.0;
        let sum = round_q8_1(v, _mm512_set1_ps(inverse_scale(d)), b);
        (b.d, b.s) = q8_1_scales(d, _mm512_reduce_add_epi32(sum));
    }
}

/// Which block each of [`reduce16!`]'s sixteen inputs holds so that block
/// `b`'s result lands in lane `b`: the tree leaves input `4k + l`'s in lane
/// `4l + k`, so the inputs go in that (self-inverse) order.
const TREE_ORDER: [usize; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

/// Reduces sixteen vectors of sixteen f32 lanes with `$op` (commutative
/// and associative: max, or an integer add through casts) into one vector
/// whose lane `4l + k` is input `4k + l`'s reduction: four rounds, each
/// pairing the vectors and halving the lanes each input still spans.
macro_rules! reduce16 {
    ($v:expr, $op:expr) => {{
        let v: [__m512; 16] = $v;
        let op = $op;
        // Halves of 256 bits, then of 128 bits, across the pair.
        let a: [__m512; 8] = std::array::from_fn(|i| {
            let (x, y) = (v[2 * i], v[2 * i + 1]);
            op(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
            )
        });
        let b: [__m512; 4] = std::array::from_fn(|i| {
            let (x, y) = (a[2 * i], a[2 * i + 1]);
            op(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
            )
        });
        // Then within each 128-bit lane: pairs of values, then single ones.
        let c: [__m512; 2] = std::array::from_fn(|i| {
            let (x, y) = (b[2 * i], b[2 * i + 1]);
            op(
                _mm512_shuffle_ps::<0b01_00_01_00>(x, y),
                _mm512_shuffle_ps::<0b11_10_11_10>(x, y),
            )
        });
        op(
            _mm512_shuffle_ps::<0b10_00_10_00>(c[0], c[1]),
            _mm512_shuffle_ps::<0b11_01_11_01>(c[0], c[1]),
        )
    }};
}

/// Sixteen Q8_1 blocks (see [`quantize_q8_1`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_1_sixteen(x: &[f32], out: &mut [BlockQ8_1]) {
    let block = |b: usize| load_block(&x[b * QK..][..QK]);
    let largest = reduce16!(
        TREE_ORDER.map(|b| {
            let v = block(b);
            _mm512_max_ps(magnitude(v[0]), magnitude(v[1]))
        }),
        |p, q| _mm512_max_ps(p, q)
    );
    let d = _mm512_div_ps(largest, _mm512_set1_ps(127.0));
    // `inverse_scale`: 1 / d, or 0 where that is not finite.
    let id = _mm512_div_ps(_mm512_set1_ps(1.0), d);
    let finite = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(magnitude(id), _mm512_set1_ps(f32::INFINITY));
    let id = lanes16(_mm512_maskz_mov_ps(finite, id));
    let mut sums = [_mm512_setzero_si512(); 16];
    for (b, o) in out.iter_mut().enumerate() {
        sums[TREE_ORDER[b]] = round_q8_1(block(b), _mm512_set1_ps(id[b]), o);
    }
    let sum = reduce16!(sums.map(|s| _mm512_castsi512_ps(s)), |p, q| {
        _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), _mm512_castps_si512(q)))
    });
    // `q8_1_scales`: d and d × sum, each rounded to f16.
    let to_f16 = |v| _mm512_cvtph_ps(_mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v));
    let ds = lanes16(to_f16(d));
    let ss = lanes16(to_f16(_mm512_mul_ps(
        d,
        _mm512_cvtepi32_ps(_mm512_castps_si512(sum)),
    )));
    for (b, o) in out.iter_mut().enumerate() {
        (o.d, o.s) = (ds[b], ss[b]);
    }
}

/// A block's 32 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_block(xs: &[f32]) -> [__m512; 2] {
    assert_eq!(xs.len(), QK);
    // SAFETY: `xs` is 32 readable f32.
    unsafe { [_mm512_loadu_ps(xs.as_ptr()), _mm512_loadu_ps(xs.as_ptr().add(16))] }
}

/// Each lane's magnitude (the sign bit cleared).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn magnitude(v: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_and_si512(
        _mm512_castps_si512(v),
        _mm512_set1_epi32(0x7FFF_FFFF),
    ))
}

/// A block's values times `id`, rounded half away from zero into `b.qs`;
/// returns their sum spread over sixteen lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn round_q8_1(v: [__m512; 2], id: __m512, b: &mut BlockQ8_1) -> __m512i {
    let sign = _mm512_set1_epi32(i32::MIN);
    let (half, one) = (_mm512_set1_ps(0.5), _mm512_set1_ps(1.0));
    let mut sum = _mm512_setzero_si512();
    for (h, &v) in v.iter().enumerate() {
        let p = _mm512_mul_ps(v, id);
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
        let away = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(magnitude(_mm512_sub_ps(p, t)), half);
        let step = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_and_si512(_mm512_castps_si512(p), sign),
            _mm512_castps_si512(one),
        ));
        let r = _mm512_cvttps_epi32(_mm512_mask_add_ps(t, away, t, step));
        sum = _mm512_add_epi32(sum, r);
        // SAFETY: bytes 16h .. 16h + 16 of the block's 32.
        unsafe { _mm_storeu_si128(b.qs.as_mut_ptr().add(16 * h).cast(), _mm512_cvtepi32_epi8(r)) };
    }
    sum
}

/// [`quant::fast_exp`] in sixteen lanes, operation for operation (no
/// fused multiply-adds, as the plain code has none), so each lane is the
/// plain value bit for bit.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn fast_exp16(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    // `clamp(-87, 88)`, NaN passing through: `max` and `min` return their
    // second operand when either is NaN.
    let x = _mm512_min_ps(c(88.0), _mm512_max_ps(c(-87.0), x));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_add_ps(
        _mm512_mul_ps(x, c(std::f32::consts::LOG2_E)),
        c(0.5),
    ));
    let r = _mm512_sub_ps(
        _mm512_sub_ps(x, _mm512_mul_ps(n, c(quant::FAST_EXP_LN2_HI))),
        _mm512_mul_ps(n, c(quant::FAST_EXP_LN2_LO)),
    );
    let mut p = c(quant::FAST_EXP_TAYLOR[0]);
    for &k in &quant::FAST_EXP_TAYLOR[1..] {
        p = _mm512_add_ps(c(k), _mm512_mul_ps(r, p));
    }
    // 2^n through the exponent bits, `integer(n)` as the plain code has it.
    let n = _mm512_sub_epi32(
        _mm512_castps_si512(_mm512_add_ps(n, c(quant::INTEGER_MAGIC))),
        _mm512_set1_epi32(quant::INTEGER_MAGIC.to_bits() as i32),
    );
    let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(n, _mm512_set1_epi32(127)));
    _mm512_mul_ps(p, _mm512_castsi512_ps(scale))
}

/// [`quant::swiglu`] sixteen values at a time (the same values; the rest
/// of a length that is not a multiple of sixteen through the plain code).
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "a gate value for each up value");
    let whole = gate.len() / 16 * 16;
    let (one, sign) = (_mm512_set1_ps(1.0), _mm512_set1_epi32(i32::MIN));
    for (g, u) in gate[..whole].chunks_exact_mut(16).zip(up.chunks_exact(16)) {
        // SAFETY: `g` and `u` are sixteen f32 each, `g` writable.
        unsafe {
            let (gv, uv) = (_mm512_loadu_ps(g.as_ptr()), _mm512_loadu_ps(u.as_ptr()));
            let e = fast_exp16(_mm512_castsi512_ps(_mm512_xor_si512(
                _mm512_castps_si512(gv),
                sign,
            )));
            let y = _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), uv);
            _mm512_storeu_ps(g.as_mut_ptr(), y);
        }
    }
    quant::swiglu(&mut gate[whole..], &up[whole..]);
}

/// [`quant::exp_lanes`] with the exponentials sixteen at a time: each
/// vector's two chunks of eight are added to the eight lanes one after
/// the other, as the plain code adds them, so the sums are the same.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn exp_lanes(v: &[f32], max: f32) -> [f32; 8] {
    assert!(v.len().is_multiple_of(8), "whole chunks of eight");
    let m = _mm512_set1_ps(max);
    let high = |e: __m512| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e)));
    let mut acc = _mm256_setzero_ps();
    let pairs = v.chunks_exact(16);
    let rest = pairs.remainder();
    for c in pairs {
        // SAFETY: `c` is sixteen f32.
        let e = fast_exp16(_mm512_sub_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }, m));
        acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
        acc = _mm256_add_ps(acc, high(e));
    }
    if !rest.is_empty() {
        // SAFETY: `rest` is eight f32.
        let x = _mm512_zextps256_ps512(unsafe { _mm256_loadu_ps(rest.as_ptr()) });
        acc = _mm256_add_ps(acc, _mm512_castps512_ps256(fast_exp16(_mm512_sub_ps(x, m))));
    }
    lanes(acc)
}

/// The shared `softmax_f16` with the exponentials eight at a time in
/// 512-bit f64 vectors (`exp_f32x8`); the sum and the f16 rounding are
/// the shared code's. The same probabilities, bit for bit.
///
/// # Safety
/// The CPU must have the features in the module's header.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn softmax_f16(scores: &mut [f32], max: f32) {
    let m = _mm256_set1_ps(max);
    let mut chunks = scores.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` is eight f32, writable.
        unsafe {
            let x = _mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m);
            _mm256_storeu_ps(c.as_mut_ptr(), exp_f32x8(x));
        }
    }
    for s in chunks.into_remainder() {
        *s = quant::exp_f32(*s - max);
    }
    let inv = super::inverse_sum(scores);
    super::scale_to_f16(scores, inv);
}

/// [`quant::exp_f32`] in eight lanes, operation for operation (in f64, its
/// fused multiply-adds where it has them, rounded once to f32), so each
/// lane is the plain value bit for bit.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn exp_f32x8(x: __m256) -> __m256 {
    let c = _mm512_set1_pd;
    // `clamp(-150, 89)`, NaN passing through (see `fast_exp16`).
    let x = _mm512_min_pd(c(89.0), _mm512_max_pd(c(-150.0), _mm512_cvtps_pd(x)));
    let n = _mm512_roundscale_pd::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_add_pd(
        _mm512_mul_pd(x, c(std::f64::consts::LOG2_E)),
        c(0.5),
    ));
    let r = _mm512_sub_pd(
        _mm512_sub_pd(x, _mm512_mul_pd(n, c(quant::EXP_LN2_HI))),
        _mm512_mul_pd(n, c(quant::EXP_LN2_LO)),
    );
    let mut p = c(quant::EXP_TAYLOR[0]);
    for &k in &quant::EXP_TAYLOR[1..] {
        p = _mm512_fmadd_pd(p, r, c(k));
    }
    let n = _mm512_sub_epi64(
        _mm512_castpd_si512(_mm512_add_pd(n, c(quant::EXP_MAGIC))),
        _mm512_set1_epi64(quant::EXP_MAGIC.to_bits() as i64),
    );
    let scale = _mm512_slli_epi64::<52>(_mm512_add_epi64(n, _mm512_set1_epi64(1023)));
    _mm512_cvtpd_ps(_mm512_mul_pd(p, _mm512_castsi512_pd(scale)))
}
