//! AVX-512 VNNI dot products for the byte-quantized formats (Q4_0, Q4_1,
//! Q8_0, and their four- and eight-row forms).
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
//! ([`super::parity::same_byte_results`], about 8 ms); a CPU where they do
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
//! Every function here requires AVX2, FMA, F16C, AVX512F, AVX512BW,
//! AVX512VL and AVX512_VNNI; [`super::Kernels::avx512vnni`] hands them out
//! only where the CPU has them all.

use std::arch::x86_64::*;

use super::avx2::{broadcast4, four_bytes, hsum, lanes, load32, nibbles, prefetch_ahead};
use super::quant::{BlockQ4_0, BlockQ4_1, BlockQ4_1x8, BlockQ8_0, BlockQ8_0S, BlockQ8_0x8, BlockQ8_1};

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
            let b = &y[j][i];
            let d = _mm256_mul_ps(dx, _mm256_set1_ps(b.d.to_f32()));
            let offset = _mm256_set1_epi32(128 * b.sum as i32);
            let sums = _mm256_sub_epi32(_mm256_add_epi32(s[j][0], s[j][1]), offset);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc[j]);
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
            let b = &y[j][i];
            let d = _mm512_mul_ps(dx, _mm512_set1_ps(b.d.to_f32()));
            let offset = _mm512_set1_epi32(128 * b.sum as i32);
            let sums = _mm512_sub_epi32(_mm512_add_epi32(s[j][0], s[j][1]), offset);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), d, acc[j]);
        }
    }
    acc.map(|a| lanes16(a))
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

/// Sixteen lanes of f32 as an array.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn lanes16(v: __m512) -> [f32; 16] {
    let mut out = [0.0f32; 16];
    // SAFETY: `out` is sixteen writable f32.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
    out
}
