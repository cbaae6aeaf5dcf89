//! AVX2 + FMA dot products for the block formats in [`super::quant`].
//!
//! Each block's integer products are summed with `vpmaddubsw` (unsigned ×
//! signed bytes into 16-bit pairs) and `vpmaddwd` (pairs into 32-bit
//! lanes), converted to f32 once per block and scaled with one FMA, so a
//! 32-value block costs a handful of instructions. Signed × signed bytes
//! use the usual trick: |x| × (y with x's sign). ggml never stores -128 in
//! a Q8 block (it quantizes to ±127), which that trick relies on.
//!
//! Every function here requires AVX2 and FMA; [`super::Kernels::detect`]
//! hands them out only where the CPU has both.

use std::arch::x86_64::*;

use super::quant::{
    BlockQ4_0, BlockQ4_1, BlockQ4_1x8, BlockQ4K, BlockQ4Kx8, BlockQ5_0, BlockQ5_0x8, BlockQ6K, BlockQ6Kx8,
    BlockQ8_0, BlockQ8_0S, BlockQ8_0x8, BlockQ8_1, BlockQ8K, QK, q6k_offsets, scale_min_k4,
};

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of nibbles as 32 bytes: the low nibbles (values 0..16) in the
/// low lane, the high nibbles (values 16..32) in the high lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes; the load has no alignment need.
    let b = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    let both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn load32(p: &[i8; 32]) -> __m256i {
    // SAFETY: `p` is 32 readable bytes; the load has no alignment need.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

/// A Q5_0 block's 32 values (`q - 16`) as signed bytes, in order.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn q5_0_values(x: &BlockQ5_0) -> __m256i {
    // Byte `k` of the vector gets byte `k / 8` of the fifth bits (a shuffle
    // stays within its 128-bit half, which holds all four), then keeps
    // only bit `k % 8`: all ones where value `k`'s fifth bit is set.
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bits = _mm256_shuffle_epi8(_mm256_set1_epi32(i32::from_le_bytes(x.qh)), spread);
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bits, select), select);
    // Without the fifth bit, `q - 16` is the nibble with the top four bits
    // set (as a signed byte); with it, the nibble alone.
    _mm256_or_si256(
        nibbles(&x.qs),
        _mm256_andnot_si256(set, _mm256_set1_epi8(0xF0u8 as i8)),
    )
}

/// Sum of unsigned × signed byte products, as eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn mul_sum_us8(ux: __m256i, sy: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(ux, sy);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// The kernels whose only AVX-512 VNNI difference is how a block's byte
/// products are summed: one row (Q4_0, Q4_1, Q8_0) and four rows against
/// one weight row. Expanded in each module that uses it, with the target
/// features (`$features`) and that module's `mul_sum_us8` (each 32-bit
/// lane's four unsigned × signed byte products, as f32), so that both sets
/// run the same steps and differ only there.
macro_rules! byte_kernels {
    ($features:literal, $safety:literal) => {
        /// Each 32-bit lane's four signed × signed byte products, as f32:
        /// |x| times y with x's signs (Q8 blocks never hold -128).
        #[inline]
        #[target_feature(enable = $features)]
        fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256 {
            mul_sum_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
        }

        /// # Safety
        #[doc = $safety]
        #[target_feature(enable = $features)]
        pub fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let eight = _mm256_set1_epi8(8);
            for (x, y) in x.iter().zip(y) {
                let d = _mm256_set1_ps(x.d.to_f32() * y.d.to_f32());
                let qx = _mm256_sub_epi8(nibbles(&x.qs), eight);
                acc = _mm256_fmadd_ps(d, mul_sum_i8(qx, load32(&y.qs)), acc);
            }
            hsum(acc)
        }

        /// # Safety
        #[doc = $safety]
        #[target_feature(enable = $features)]
        pub fn dot_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut offsets = 0.0f32;
            for (x, y) in x.iter().zip(y) {
                let d = _mm256_set1_ps(x.d.to_f32() * y.d);
                acc = _mm256_fmadd_ps(d, mul_sum_us8(nibbles(&x.qs), load32(&y.qs)), acc);
                offsets += x.m.to_f32() * y.s;
            }
            hsum(acc) + offsets
        }

        /// # Safety
        #[doc = $safety]
        #[target_feature(enable = $features)]
        pub fn dot_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (x, y) in x.iter().zip(y) {
                let d = _mm256_set1_ps(x.d.to_f32() * y.d.to_f32());
                acc = _mm256_fmadd_ps(d, mul_sum_i8(load32(&x.qs), load32(&y.qs)), acc);
            }
            hsum(acc)
        }

        /// # Safety
        #[doc = $safety]
        #[target_feature(enable = $features)]
        pub fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (x, y) in x.iter().zip(y) {
                let d = _mm256_set1_ps(x.d.to_f32() * y.d.to_f32());
                acc = _mm256_fmadd_ps(d, mul_sum_i8(q5_0_values(x), load32(&y.qs)), acc);
            }
            hsum(acc)
        }

        /// One Q5_0 weight row against four activation rows.
        ///
        /// # Safety
        #[doc = $safety]
        #[target_feature(enable = $features)]
        pub fn dot_q5_0_x4(x: &[BlockQ5_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, x) in x.iter().enumerate() {
                signed_block_x4(&mut acc, q5_0_values(x), x.d.to_f32(), y, i);
            }
            std::array::from_fn(|j| hsum(acc[j]))
        }

        /// One Q4_1 weight row against four activation rows: each weight
        /// block is unpacked once for all four.
        ///
        /// # Safety
        #[doc = $safety]
        #[target_feature(enable = $features)]
        pub fn dot_q4_1_x4(x: &[BlockQ4_1], y: [&[BlockQ8_1]; 4]) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut offsets = [0.0f32; 4];
            for (i, x) in x.iter().enumerate() {
                let qx = nibbles(&x.qs);
                let (dx, mx) = (x.d.to_f32(), x.m.to_f32());
                for j in 0..4 {
                    let y = &y[j][i];
                    let d = _mm256_set1_ps(dx * y.d);
                    acc[j] = _mm256_fmadd_ps(d, mul_sum_us8(qx, load32(&y.qs)), acc[j]);
                    offsets[j] += mx * y.s;
                }
            }
            std::array::from_fn(|j| hsum(acc[j]) + offsets[j])
        }

        /// One Q4_0 weight row against four activation rows.
        ///
        /// # Safety
        #[doc = $safety]
        #[target_feature(enable = $features)]
        pub fn dot_q4_0_x4(x: &[BlockQ4_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            let eight = _mm256_set1_epi8(8);
            for (i, x) in x.iter().enumerate() {
                let qx = _mm256_sub_epi8(nibbles(&x.qs), eight);
                signed_block_x4(&mut acc, qx, x.d.to_f32(), y, i);
            }
            std::array::from_fn(|j| hsum(acc[j]))
        }

        /// One Q8_0 weight row against four activation rows.
        ///
        /// # Safety
        #[doc = $safety]
        #[target_feature(enable = $features)]
        pub fn dot_q8_0_x4(x: &[BlockQ8_0], y: [&[BlockQ8_0]; 4]) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, x) in x.iter().enumerate() {
                signed_block_x4(&mut acc, load32(&x.qs), x.d.to_f32(), y, i);
            }
            std::array::from_fn(|j| hsum(acc[j]))
        }

        /// Adds a signed weight block `qx` (scale `dx`) times block `i` of
        /// each of four Q8_0 activation rows to their accumulators; |x| is
        /// taken once and each activation takes x's signs.
        #[inline]
        #[target_feature(enable = $features)]
        fn signed_block_x4(acc: &mut [__m256; 4], qx: __m256i, dx: f32, y: [&[BlockQ8_0]; 4], i: usize) {
            let ax = _mm256_sign_epi8(qx, qx);
            for (acc, y) in acc.iter_mut().zip(y) {
                let y = &y[i];
                let d = _mm256_set1_ps(dx * y.d.to_f32());
                let sy = _mm256_sign_epi8(load32(&y.qs), qx);
                *acc = _mm256_fmadd_ps(d, mul_sum_us8(ax, sy), *acc);
            }
        }
    };
}

byte_kernels!("avx2,fma", "The CPU must have AVX2 and FMA.");

/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn dot_q4k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut offsets = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let (sums, mins) = q4k_block(&q4k_values(x), y);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y.d * x.d.to_f32()), _mm256_cvtepi32_ps(sums), acc);
        offsets += y.d * x.dmin.to_f32() * mins as f32;
    }
    hsum(acc) - offsets
}

/// One Q4_K weight row against four activation rows: each block's values
/// and scales are unpacked once for all four.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn dot_q4k_x4(x: &[BlockQ4K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut offsets = [0.0f32; 4];
    for (i, x) in x.iter().enumerate() {
        let values = q4k_values(x);
        for j in 0..4 {
            let y = &y[j][i];
            let (sums, mins) = q4k_block(&values, y);
            acc[j] = _mm256_fmadd_ps(
                _mm256_set1_ps(y.d * x.d.to_f32()),
                _mm256_cvtepi32_ps(sums),
                acc[j],
            );
            offsets[j] += y.d * x.dmin.to_f32() * mins as f32;
        }
    }
    std::array::from_fn(|j| hsum(acc[j]) - offsets[j])
}

/// A Q4_K block's values, sub-block `j` (32 values) in vector `j`, and
/// each sub-block's scale and min.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q4k_values(x: &BlockQ4K) -> ([__m256i; 8], [(u8, u8); 8]) {
    let low = _mm256_set1_epi8(0x0F);
    let mut q = [_mm256_setzero_si256(); 8];
    for i in 0..4 {
        // SAFETY: bytes 32i..32i+32 lie inside the 128-byte `qs`.
        let q4 = unsafe { _mm256_loadu_si256(x.qs.as_ptr().add(32 * i).cast()) };
        q[2 * i] = _mm256_and_si256(q4, low);
        q[2 * i + 1] = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low);
    }
    (q, std::array::from_fn(|j| scale_min_k4(j, &x.scales)))
}

/// One Q4_K block (unpacked by [`q4k_values`]) against one activation
/// block: the scaled integer sums in eight lanes, and the integer sum of
/// the mins by the activations' sums.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q4k_block(values: &([__m256i; 8], [(u8, u8); 8]), y: &BlockQ8K) -> (__m256i, i32) {
    let (q, scales) = values;
    let mut mins = 0i32;
    let mut sums = _mm256_setzero_si256();
    for (j, (q, &(scale, min))) in q.iter().zip(scales).enumerate() {
        mins += min as i32 * sub_sum(y, j);
        let pairs = _mm256_maddubs_epi16(*q, load32(q4k_acts(y, j)));
        sums = _mm256_add_epi32(sums, _mm256_madd_epi16(pairs, _mm256_set1_epi16(scale as i16)));
    }
    (sums, mins)
}

/// The Q6_K product, as [`super::quant::dot_q6k`] takes it: per block,
/// the integer sum of `scale × q × a` with `q` unsigned (0..63), less 32
/// times the scales by the activations' sums of sixteen, then one scaling.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn dot_q6k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut total = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        total += x.d.to_f32() * y.d * (q6k_sum(x, &q6k_values(x), &y.qs) - 32 * q6k_offsets(x, y)) as f32;
    }
    total
}

/// One Q6_K weight row against four activation rows: each block's values
/// are unpacked once for all four.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn dot_q6k_x4(x: &[BlockQ6K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
    let mut total = [0.0f32; 4];
    for (i, x) in x.iter().enumerate() {
        let q = q6k_values(x);
        let d = x.d.to_f32();
        for (t, y) in total.iter_mut().zip(y) {
            let y = &y[i];
            *t += d * y.d * (q6k_sum(x, &q, &y.qs) - 32 * q6k_offsets(x, y)) as f32;
        }
    }
    total
}

/// A Q6_K block's values `q` (0..63), 32 to a vector, in order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q6k_values(x: &BlockQ6K) -> [__m256i; 8] {
    let (low, three) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
    let mut q = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        // SAFETY: bytes 64h .. 64h + 64 of `ql` and 32h .. 32h + 32 of `qh`
        // are readable; no alignment needed.
        let (l0, l1, hi) = unsafe {
            (
                _mm256_loadu_si256(x.ql.as_ptr().add(64 * h).cast()),
                _mm256_loadu_si256(x.ql.as_ptr().add(64 * h + 32).cast()),
                _mm256_loadu_si256(x.qh.as_ptr().add(32 * h).cast()),
            )
        };
        // Group g's top two bits, moved up to bits 4 and 5 of each byte.
        let top = |g: i32| {
            let bits = match g {
                0 => hi,
                1 => _mm256_srli_epi16(hi, 2),
                2 => _mm256_srli_epi16(hi, 4),
                _ => _mm256_srli_epi16(hi, 6),
            };
            _mm256_slli_epi16(_mm256_and_si256(bits, three), 4)
        };
        q[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, low), top(0));
        q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, low), top(1));
        q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), top(2));
        q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low), top(3));
    }
    q
}

/// `Σ scale × q × a` over one Q6_K block (`q` from [`q6k_values`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q6k_sum(x: &BlockQ6K, q: &[__m256i; 8], a: &[i8; 256]) -> i32 {
    let mut sum = _mm256_setzero_si256();
    for (g, q) in q.iter().enumerate() {
        let a: &[i8; 32] = a[32 * g..32 * g + 32].try_into().expect("32 values");
        // Pairs of q × a fit in 16 bits (63 × 128 × 2); each half of the
        // vector is one sub-block of sixteen, with its own scale.
        let pairs = _mm256_maddubs_epi16(*q, load32(a));
        let scales = _mm256_set_m128i(
            _mm_set1_epi16(x.scales[2 * g + 1] as i16),
            _mm_set1_epi16(x.scales[2 * g] as i16),
        );
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, scales));
    }
    hsum_i32(sum)
}

/// The sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    _mm_cvtsi128_si32(s)
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= n, inside both slices.
            let (vx, vy) = unsafe {
                (
                    _mm256_loadu_ps(x.as_ptr().add(i + 8 * k)),
                    _mm256_loadu_ps(y.as_ptr().add(i + 8 * k)),
                )
            };
            *a = _mm256_fmadd_ps(vx, vy, *a);
        }
        i += 32;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut total = hsum(sum);
    for j in i..n {
        total += x[j] * y[j];
    }
    total
}

/// Four activation bytes `at .. at + 4`, repeated in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn broadcast4(qs: &[i8; 32], at: usize) -> __m256i {
    _mm256_set1_epi32(four_bytes(qs, at))
}

/// Activation bytes `at .. at + 4` as one 32-bit lane's worth, for a
/// broadcast.
#[inline]
pub(super) fn four_bytes(qs: &[i8; 32], at: usize) -> i32 {
    let b = &qs[at..at + 4];
    i32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

/// Asks for the memory `NEAR` blocks past `block` (the same rows' later
/// blocks, or the next rows': they follow in memory) into L1, so that it
/// arrives while this block is computed, and the memory `FAR` bytes past
/// it into L2. The hardware prefetchers do not cross 4 KiB pages and keep
/// only a few lines ahead; a batch's eight rows spend long enough on each
/// block that the weights otherwise arrive late (measured on a Xeon here:
/// a batched decoding step 20-30% faster, a single stream 10-15%). A
/// prefetch never faults, so the address may lie past the weights' end.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn prefetch_ahead<T>(block: &T) {
    const NEAR: usize = 4;
    const FAR: usize = 8192;
    let size = std::mem::size_of::<T>();
    let at = (block as *const T).cast::<i8>();
    for line in (0..size).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(NEAR * size + line));
        _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(FAR + line));
    }
}

/// Eight lanes of f32 as an array.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn lanes(v: __m256) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    // SAFETY: `out` is eight writable f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Calls `$kernel::<N>` with `N` the number of activation rows in `$y`
/// (1 to 8), and writes its sums to `$out`.
macro_rules! by_rows {
    ($kernel:ident, $x:expr, $y:expr, $out:expr) => {{
        let (y, out) = ($y, $out);
        assert_eq!(y.len(), out.len(), "one output row per activation row");
        match y.len() {
            1 => out.copy_from_slice(&$kernel::<1>($x, y.try_into().unwrap())),
            2 => out.copy_from_slice(&$kernel::<2>($x, y.try_into().unwrap())),
            3 => out.copy_from_slice(&$kernel::<3>($x, y.try_into().unwrap())),
            4 => out.copy_from_slice(&$kernel::<4>($x, y.try_into().unwrap())),
            5 => out.copy_from_slice(&$kernel::<5>($x, y.try_into().unwrap())),
            6 => out.copy_from_slice(&$kernel::<6>($x, y.try_into().unwrap())),
            7 => out.copy_from_slice(&$kernel::<7>($x, y.try_into().unwrap())),
            8 => out.copy_from_slice(&$kernel::<8>($x, y.try_into().unwrap())),
            n => panic!("{n} activation rows at once (the kernels take 1 to 8)"),
        }
    }};
}

/// Eight interleaved Q4_1 weight rows against one to eight activation
/// rows: `out[j]` gets activation row `j`'s eight sums. Each weight block
/// is loaded and unpacked once for all of them, so a batch streams the
/// weights from memory once per pass rather than once per four rows.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_1x8(x: &[BlockQ4_1x8], y: &[&[BlockQ8_1]], out: &mut [[f32; 8]]) {
    by_rows!(q4_1x8_n, x, y, out);
}

/// [`dot_q4_1x8`] for `N` activation rows.
///
/// Run `c` of a block (32 bytes) holds bytes `4c .. 4c + 4` of each of the
/// eight rows, one row per 32-bit lane: their low nibbles are values
/// `4c .. 4c + 4`, their high nibbles values `16 + 4c .. 20 + 4c`. Each
/// row's partial products stay in 16 bits until the end of the block: each
/// is at most 2 × 15 × 128 = 3,840, so their sum (≤ 30,720) cannot
/// overflow.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1x8_n<const N: usize>(x: &[BlockQ4_1x8], y: &[&[BlockQ8_1]; N]) -> [[f32; 8]; N] {
    let y: [&[BlockQ8_1]; N] = y.map(|y| &y[..x.len()]);
    let (low, ones) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi16(1));
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, x) in x.iter().enumerate() {
        prefetch_ahead(x);
        let mut s = [_mm256_setzero_si256(); N];
        for c in 0..4 {
            // SAFETY: run `c` is 32 readable bytes; no alignment needed.
            let v = unsafe { _mm256_loadu_si256(x.qs[32 * c..].as_ptr().cast()) };
            let (lo, hi) = (
                _mm256_and_si256(v, low),
                _mm256_and_si256(_mm256_srli_epi16(v, 4), low),
            );
            for j in 0..N {
                let q = &y[j][i].qs;
                s[j] = _mm256_add_epi16(s[j], _mm256_maddubs_epi16(lo, broadcast4(q, 4 * c)));
                s[j] = _mm256_add_epi16(s[j], _mm256_maddubs_epi16(hi, broadcast4(q, 16 + 4 * c)));
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
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(s[j], ones));
            acc[j] = _mm256_fmadd_ps(sums, _mm256_mul_ps(dx, _mm256_set1_ps(b.d)), acc[j]);
            acc[j] = _mm256_fmadd_ps(mx, _mm256_set1_ps(b.s), acc[j]);
        }
    }
    acc.map(|a| lanes(a))
}

/// Eight interleaved Q8_0 weight rows against one to eight activation
/// rows, as [`dot_q4_1x8`].
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q8_0x8(x: &[BlockQ8_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
    by_rows!(q8_0x8_n, x, y, out);
}

/// [`dot_q8_0x8`] for `N` activation rows. Run `c` of a block holds
/// values `4c .. 4c + 4` of each row (plus 128: flipping the top bit gives
/// them back); each run's pairs can reach 2 × 128 × 128, so they widen to
/// 32 bits at once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0x8_n<const N: usize>(x: &[BlockQ8_0x8], y: &[&[BlockQ8_0S]; N]) -> [[f32; 8]; N] {
    let y: [&[BlockQ8_0S]; N] = y.map(|y| &y[..x.len()]);
    let (ones, top) = (_mm256_set1_epi16(1), _mm256_set1_epi8(i8::MIN));
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, x) in x.iter().enumerate() {
        prefetch_ahead(x);
        let mut s = [_mm256_setzero_si256(); N];
        for c in 0..8 {
            // SAFETY: run `c` is 32 readable bytes; no alignment needed.
            let w = unsafe { _mm256_loadu_si256(x.qs[32 * c..].as_ptr().cast()) };
            let w = _mm256_xor_si256(w, top);
            let aw = _mm256_sign_epi8(w, w);
            for j in 0..N {
                let sy = _mm256_sign_epi8(broadcast4(&y[j][i].qs, 4 * c), w);
                s[j] = _mm256_add_epi32(s[j], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sy), ones));
            }
        }
        // SAFETY: `d` is 16 readable bytes.
        let dx = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())) };
        for j in 0..N {
            let d = _mm256_mul_ps(dx, _mm256_set1_ps(y[j][i].d.to_f32()));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[j]), d, acc[j]);
        }
    }
    acc.map(|a| lanes(a))
}

/// Eight interleaved Q5_0 weight rows against one to eight activation
/// rows, as [`dot_q4_1x8`].
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q5_0x8(x: &[BlockQ5_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
    by_rows!(q5_0x8_n, x, y, out);
}

/// [`dot_q5_0x8`] for `N` activation rows. The weights come out of
/// [`q5_0_run`] unsigned (`q + 16`), so each block's sums are `16 Σy` too
/// large, which the activations' block sums take back off. Two runs' four
/// pairs of products fit in 16 bits (4 × 2 × 31 × 128 = 31,744), four
/// runs' would not: each two runs widen to 32 bits.
///
/// A block's four runs are unpacked first and then taken row by row, so
/// that each row needs one integer accumulator at a time, not one per row
/// for the whole block: with eight rows, eight accumulators, eight sums
/// and the runs do not fit in AVX2's sixteen registers, and the spills
/// made a batch of 8 about 15% slower on a Q4_K_M model (built for
/// x86-64-v3). The sums are the same, in the same order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0x8_n<const N: usize>(x: &[BlockQ5_0x8], y: &[&[BlockQ8_0S]; N]) -> [[f32; 8]; N] {
    let y: [&[BlockQ8_0S]; N] = y.map(|y| &y[..x.len()]);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, x) in x.iter().enumerate() {
        prefetch_ahead(x);
        let runs: [(__m256i, __m256i); 4] = std::array::from_fn(|c| q5_0_run(x, c));
        // SAFETY: `d` is 16 readable bytes.
        let dx = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())) };
        for j in 0..N {
            let b = &y[j][i];
            let run = |c: usize| {
                let (lo, hi) = runs[c];
                _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, broadcast4(&b.qs, 4 * c)),
                    _mm256_maddubs_epi16(hi, broadcast4(&b.qs, 16 + 4 * c)),
                )
            };
            let s = _mm256_add_epi32(
                _mm256_madd_epi16(_mm256_add_epi16(run(0), run(1)), ones),
                _mm256_madd_epi16(_mm256_add_epi16(run(2), run(3)), ones),
            );
            let d = _mm256_mul_ps(dx, _mm256_set1_ps(b.d.to_f32()));
            let sums = _mm256_sub_epi32(s, _mm256_set1_epi32(16 * b.sum as i32));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc[j]);
        }
    }
    acc.map(|a| lanes(a))
}

/// Run `c` of an interleaved Q5_0 block as two vectors of `q + 16` (0..31),
/// one row per 32-bit lane: values `4c .. 4c + 4` of each row, then values
/// `16 + 4c .. 20 + 4c`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_0_run(x: &BlockQ5_0x8, c: usize) -> (__m256i, __m256i) {
    let low = _mm256_set1_epi8(0x0F);
    // SAFETY: run `c` is 32 readable bytes; no alignment needed.
    let v = unsafe { _mm256_loadu_si256(x.qs[32 * c..].as_ptr().cast()) };
    let bits = u64::from_le_bytes(x.qh[8 * c..8 * c + 8].try_into().expect("eight bytes"));
    let (lo_bits, hi_bits) = fifth_bits(_mm256_set1_epi64x(bits as i64));
    (
        _mm256_or_si256(_mm256_and_si256(v, low), lo_bits),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), hi_bits),
    )
}

/// From a bit run (eight bytes, one per row, in each 64-bit lane), 16 in
/// byte `4r + k` of each 128-bit half where row `r`'s fifth bit of value
/// `k` is set: for the low nibbles' values (bits 0 to 3), then the high
/// nibbles' (bits 4 to 7). A 128-bit half covers four rows: the first
/// half rows 0 to 3, the second rows 4 to 7.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fifth_bits(run: __m256i) -> (__m256i, __m256i) {
    let spread = _mm256_set_epi64x(
        0x0707_0707_0606_0606,
        0x0505_0505_0404_0404,
        0x0303_0303_0202_0202,
        0x0101_0101_0000_0000,
    );
    let bits = _mm256_shuffle_epi8(run, spread);
    let sixteen = _mm256_set1_epi8(16);
    let set = |select: __m256i| {
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bits, select), select), sixteen)
    };
    (
        set(_mm256_set1_epi32(0x0804_0201)),
        set(_mm256_set1_epi32(0x8040_2010u32 as i32)),
    )
}

/// Eight interleaved Q4_K weight rows against one to eight activation
/// rows, as [`dot_q4_1x8`].
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4kx8(x: &[BlockQ4Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
    by_rows!(q4kx8_n, x, y, out);
}

/// [`dot_q4kx8`] for `N` activation rows. Per sub-block of 32 values, each
/// row's products stay in 16 bits (eight runs of pairs, each at most
/// 2 × 15 × 128: 30,720 in all), then widen and take the row's scale in
/// one `vpmaddwd`, against the scale in both 16-bit halves of the row's
/// lane (2 × 30,720 × 63 fits 32 bits). The mins take the activations'
/// sums in [`q4k_add_mins`] and the float steps are [`q4k_finish`]'s,
/// both shared with the VNNI kernels.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
            let scale = _mm256_or_si256(scale, _mm256_slli_epi32(scale, 16));
            let mut dot = [_mm256_setzero_si256(); N];
            for m in 0..8 {
                let q = q4k_run(x, sub, m, low);
                for j in 0..N {
                    let a = broadcast4(q4k_acts(&y[j][i], sub), 4 * m);
                    dot[j] = _mm256_add_epi16(dot[j], _mm256_maddubs_epi16(q, a));
                }
            }
            for j in 0..N {
                sums[j] = _mm256_add_epi32(sums[j], _mm256_madd_epi16(dot[j], scale));
                mins[j] = q4k_add_mins(mins[j], min, &y[j][i], sub);
            }
        }
        for j in 0..N {
            acc[j] = q4k_finish(x, y[j][i].d, sums[j], mins[j], acc[j]);
        }
    }
    acc.map(|a| lanes(a))
}

/// Run `m` of sub-block `sub` of an interleaved Q4_K block: values
/// `4m .. 4m + 4` of the sub-block for each of the eight rows, one row per
/// 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4k_run(x: &BlockQ4Kx8, sub: usize, m: usize, low: __m256i) -> __m256i {
    // SAFETY: run 8(sub / 2) + m is 32 readable bytes; no alignment needed.
    let v = unsafe { _mm256_loadu_si256(x.qs[32 * (8 * (sub / 2) + m)..].as_ptr().cast()) };
    if sub.is_multiple_of(2) {
        _mm256_and_si256(v, low)
    } else {
        _mm256_and_si256(_mm256_srli_epi16(v, 4), low)
    }
}

/// The 32 activations of Q4_K sub-block `sub`.
#[inline]
pub(super) fn q4k_acts(y: &BlockQ8K, sub: usize) -> &[i8; 32] {
    y.qs[32 * sub..32 * sub + 32].try_into().expect("32 values")
}

/// The activations' sum over Q4_K sub-block `sub` (32 values).
#[inline]
pub(super) fn sub_sum(y: &BlockQ8K, sub: usize) -> i32 {
    y.bsums[2 * sub] as i32 + y.bsums[2 * sub + 1] as i32
}

/// `mins` plus each row's min (`min`, from [`q4k_scales8`]) times the
/// activations' sum over sub-block `sub`, in one `vpmaddwd`: a min (< 64)
/// leaves its lane's top half zero, and the sum (at most 32 × 128) is its
/// lane's low half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4k_add_mins(mins: __m256i, min: __m256i, y: &BlockQ8K, sub: usize) -> __m256i {
    _mm256_add_epi32(mins, _mm256_madd_epi16(min, _mm256_set1_epi32(sub_sum(y, sub))))
}

/// Sub-block `sub`'s 6-bit scales and mins of the eight rows of an
/// interleaved Q4_K block, as eight i32 lanes each (what
/// [`super::quant::scale_min_k4`] gives each row).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4k_scales8(x: &BlockQ4Kx8, sub: usize) -> (__m256i, __m256i) {
    // SAFETY: each `scales` entry is 8 readable bytes.
    let bytes = |k: usize| unsafe { _mm_loadl_epi64(x.scales[k].as_ptr().cast()) };
    let (six, four) = (_mm_set1_epi8(63), _mm_set1_epi8(0x0F));
    // A byte's top two bits, moved to bits 4 and 5.
    let top = |v: __m128i| _mm_srli_epi16(_mm_and_si128(v, _mm_set1_epi8(0xC0u8 as i8)), 2);
    let (scale, min) = if sub < 4 {
        (_mm_and_si128(bytes(sub), six), _mm_and_si128(bytes(sub + 4), six))
    } else {
        let packed = bytes(sub + 4);
        (
            _mm_or_si128(_mm_and_si128(packed, four), top(bytes(sub - 4))),
            _mm_or_si128(_mm_and_si128(_mm_srli_epi16(packed, 4), four), top(bytes(sub))),
        )
    };
    (_mm256_cvtepu8_epi32(scale), _mm256_cvtepu8_epi32(min))
}

/// One interleaved Q4_K block's integer sums (scaled products, and mins by
/// activation sums) into an activation row's eight accumulators, with the
/// activation scale `yd`: `acc + d yd sums - dmin yd mins`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4k_finish(x: &BlockQ4Kx8, yd: f32, sums: __m256i, mins: __m256i, acc: __m256) -> __m256 {
    // SAFETY: `d` and `dmin` are 16 readable bytes each.
    let (d, dmin) = unsafe {
        (
            _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())),
            _mm256_cvtph_ps(_mm_loadu_si128(x.dmin.as_ptr().cast())),
        )
    };
    let yd = _mm256_set1_ps(yd);
    let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(d, yd), acc);
    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_mul_ps(dmin, yd), acc)
}

/// Eight interleaved Q6_K weight rows against one to eight activation
/// rows, as [`dot_q4_1x8`].
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q6kx8(x: &[BlockQ6Kx8], y: &[&[BlockQ8K]], out: &mut [[f32; 8]]) {
    by_rows!(q6kx8_n, x, y, out);
}

/// [`dot_q6kx8`] for `N` activation rows. Per sub-block of sixteen values
/// (four runs), each row's products less 32 times the activations' sum,
/// times the row's scale. Two runs of pairs fit in 16 bits (2 × 2 × 63 ×
/// 128), so each pair of runs widens once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6kx8_n<const N: usize>(x: &[BlockQ6Kx8], y: &[&[BlockQ8K]; N]) -> [[f32; 8]; N] {
    let y: [&[BlockQ8K]; N] = y.map(|y| &y[..x.len()]);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, x) in x.iter().enumerate() {
        prefetch_ahead(x);
        let mut sums = [_mm256_setzero_si256(); N];
        for sub in 0..16 {
            let mut dot = [_mm256_setzero_si256(); N];
            for m in (0..4).step_by(2) {
                let (q0, q1) = (q6k_run(x, sub, m), q6k_run(x, sub, m + 1));
                for j in 0..N {
                    let a = q6k_acts(&y[j][i], sub);
                    let pairs = _mm256_add_epi16(
                        _mm256_maddubs_epi16(q0, broadcast4(a, q6k_at(sub, m))),
                        _mm256_maddubs_epi16(q1, broadcast4(a, q6k_at(sub, m + 1))),
                    );
                    dot[j] = _mm256_add_epi32(dot[j], _mm256_madd_epi16(pairs, ones));
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

/// Run `m` (0..4) of sub-block `sub` of an interleaved Q6_K block: four
/// values `q` (0..63) of each of the eight rows, one row per 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6k_run(x: &BlockQ6Kx8, sub: usize, m: usize) -> __m256i {
    // Sub-block 8h + 2g + e holds values 128h + 32g + 16e .. + 16: runs
    // 4e .. 4e + 4 of group g in half h.
    let (h, g, m) = (sub / 8, sub % 8 / 2, 4 * (sub % 2) + m);
    let (t, u) = (16 * h + 8 * (g % 2) + m, 8 * h + m);
    // SAFETY: runs t (of 32) and u (of 16) are 32 readable bytes each.
    let (low, high) = unsafe {
        (
            _mm256_loadu_si256(x.ql[32 * t..].as_ptr().cast()),
            _mm256_loadu_si256(x.qh[32 * u..].as_ptr().cast()),
        )
    };
    let nibbles = if g < 2 { low } else { _mm256_srli_epi16(low, 4) };
    let top = match g {
        0 => high,
        1 => _mm256_srli_epi16(high, 2),
        2 => _mm256_srli_epi16(high, 4),
        _ => _mm256_srli_epi16(high, 6),
    };
    _mm256_or_si256(
        _mm256_and_si256(nibbles, _mm256_set1_epi8(0x0F)),
        _mm256_slli_epi16(_mm256_and_si256(top, _mm256_set1_epi8(3)), 4),
    )
}

/// The 32 activations of the group that sub-block `sub` lies in.
#[inline]
pub(super) fn q6k_acts(y: &BlockQ8K, sub: usize) -> &[i8; 32] {
    let at = 32 * (sub / 2);
    y.qs[at..at + 32].try_into().expect("32 values")
}

/// Where run `m` of sub-block `sub` starts in [`q6k_acts`]'s 32 values.
#[inline]
pub(super) fn q6k_at(sub: usize, m: usize) -> usize {
    16 * (sub % 2) + 4 * m
}

/// Sub-block `sub`'s scales of the eight rows, as i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6k_scales8(x: &BlockQ6Kx8, sub: usize) -> __m256i {
    // SAFETY: each `scales` entry is 8 readable bytes.
    _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(x.scales[sub].as_ptr().cast()) })
}

/// `sums + scale × (dot - 32 Σa)` for sub-block `sub`: the offset of 32
/// taken off with the activations' sum of sixteen.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6k_scaled(sums: __m256i, dot: __m256i, scale: __m256i, y: &BlockQ8K, sub: usize) -> __m256i {
    let offset = _mm256_set1_epi32(32 * y.bsums[sub] as i32);
    _mm256_add_epi32(sums, _mm256_mullo_epi32(_mm256_sub_epi32(dot, offset), scale))
}

/// `acc + d yd sums` for one interleaved Q6_K block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6k_finish(x: &BlockQ6Kx8, yd: f32, sums: __m256i, acc: __m256) -> __m256 {
    // SAFETY: `d` is 16 readable bytes.
    let d = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())) };
    _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(sums),
        _mm256_mul_ps(d, _mm256_set1_ps(yd)),
        acc,
    )
}

/// One query head's attention over `n` cached positions, with llama.cpp's
/// roundings (see [`super::attend`]). Position `j`'s key and value start
/// at `j * stride`; `scores` holds at least `n` values. The head size must
/// be a multiple of 32 and at most 256.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    keys: &[half::f16],
    values: &[half::f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    assert!(hd.is_multiple_of(32) && hd <= 256 && out.len() == hd && scores.len() >= n);
    assert!(n == 0 || (n - 1) * stride + hd <= keys.len().min(values.len()));
    // The usual head sizes get a copy whose loops have a constant length,
    // so that the query and the accumulators live in registers.
    match hd {
        64 => attend_regs::<8>(q, keys, values, stride, n, scale, scores, out),
        32 => attend_regs::<4>(q, keys, values, stride, n, scale, scores, out),
        128 => attend_regs::<16>(q, keys, values, stride, n, scale, scores, out),
        _ => attend_regs::<32>(q, keys, values, stride, n, scale, scores, out),
    }
}

/// [`attend`] with `R` registers of eight per head, or (`R` = 32) as
/// many as the head needs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn attend_regs<const R: usize>(
    q: &[f32],
    keys: &[half::f16],
    values: &[half::f16],
    stride: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let regs = if R < 32 { R } else { q.len() / 8 };
    let (kp, vp, qp) = (keys.as_ptr(), values.as_ptr(), q.as_ptr());
    let mut qv = [_mm256_setzero_ps(); R];
    for (r, v) in qv.iter_mut().enumerate().take(regs) {
        // SAFETY: 8r + 8 <= hd = q.len() (checked by the caller).
        *v = unsafe { _mm256_loadu_ps(qp.add(8 * r)) };
    }
    let scores = &mut scores[..n];
    let mut max = f32::NEG_INFINITY;
    for (j, s) in scores.iter_mut().enumerate() {
        let base = j * stride;
        prefetch_position(kp, vp, base, stride, q.len());
        let mut lanes = [_mm256_setzero_ps(); 4];
        for r in 0..regs {
            // SAFETY: base + 8r + 8 <= base + hd <= keys.len().
            let k = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(kp.add(base + 8 * r).cast())) };
            lanes[r % 4] = _mm256_fmadd_ps(k, qv[r], lanes[r % 4]);
        }
        *s = hsum_pairwise(_mm256_add_ps(
            _mm256_add_ps(lanes[0], lanes[2]),
            _mm256_add_ps(lanes[1], lanes[3]),
        )) * scale;
        max = max.max(*s);
    }
    super::softmax_f16(scores, max);
    let mut acc = [_mm256_setzero_ps(); R];
    for (j, &p) in scores.iter().enumerate() {
        let base = j * stride;
        let w = _mm256_set1_ps(p);
        for (r, a) in acc.iter_mut().enumerate().take(regs) {
            // SAFETY: base + 8r + 8 <= base + hd <= values.len().
            let v = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(vp.add(base + 8 * r).cast())) };
            *a = _mm256_fmadd_ps(w, v, *a);
        }
    }
    for (r, a) in acc.iter().enumerate().take(regs) {
        // SAFETY: 8r + 8 <= hd = out.len().
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * r), *a) };
    }
}

/// [`attend`] for three query heads of size 64 that share one key and
/// value head (grouped-query attention): each key and value is loaded and
/// widened once for the three. Each head's arithmetic is exactly that of
/// [`attend`] alone. `q` and `out` hold the three heads one after
/// another; `scores` holds at least `3n` values.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
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
    const R: usize = 8;
    assert!(q.len() == G * 64 && out.len() == G * 64 && scores.len() >= G * n);
    assert!(n == 0 || (n - 1) * stride + 64 <= keys.len().min(values.len()));
    let (kp, vp) = (keys.as_ptr(), values.as_ptr());
    // SAFETY: 8r + 8 <= 64 within each head's 64 values of `q`.
    let qv: [[__m256; R]; G] = std::array::from_fn(|h| {
        std::array::from_fn(|r| unsafe { _mm256_loadu_ps(q[64 * h + 8 * r..].as_ptr()) })
    });
    let (s0, rest) = scores[..G * n].split_at_mut(n);
    let (s1, s2) = rest.split_at_mut(n);
    let mut max = [f32::NEG_INFINITY; G];
    for j in 0..n {
        let base = j * stride;
        prefetch_position(kp, vp, base, stride, 64);
        let mut lanes = [[_mm256_setzero_ps(); 4]; G];
        for r in 0..R {
            // SAFETY: base + 8r + 8 <= base + 64 <= keys.len().
            let k = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(kp.add(base + 8 * r).cast())) };
            for h in 0..G {
                lanes[h][r % 4] = _mm256_fmadd_ps(k, qv[h][r], lanes[h][r % 4]);
            }
        }
        for (h, s) in [&mut s0[j], &mut s1[j], &mut s2[j]].into_iter().enumerate() {
            let l = &lanes[h];
            *s = hsum_pairwise(_mm256_add_ps(
                _mm256_add_ps(l[0], l[2]),
                _mm256_add_ps(l[1], l[3]),
            )) * scale;
            max[h] = max[h].max(*s);
        }
    }
    super::softmax_f16(s0, max[0]);
    super::softmax_f16(s1, max[1]);
    super::softmax_f16(s2, max[2]);
    // Values in two halves of four registers, so that the three heads'
    // accumulators fit in registers.
    for half in 0..2 {
        let mut acc = [[_mm256_setzero_ps(); 4]; G];
        for j in 0..n {
            let base = j * stride + 32 * half;
            let p = [s0[j], s1[j], s2[j]].map(|p| _mm256_set1_ps(p));
            for r in 0..4 {
                // SAFETY: base + 8r + 8 <= j * stride + 64 <= values.len().
                let v = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(vp.add(base + 8 * r).cast())) };
                for (acc, &p) in acc.iter_mut().zip(&p) {
                    acc[r] = _mm256_fmadd_ps(p, v, acc[r]);
                }
            }
        }
        for (h, acc) in acc.iter().enumerate() {
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: 64h + 32 half + 8r + 8 <= 192 = out.len().
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(64 * h + 32 * half + 8 * r), *a) };
            }
        }
    }
}

/// Asks for the keys eight positions past the one at `base` and for its
/// values (read after the softmax), `len` values each. A step's weights
/// have pushed the cache out of L2 by the time attention reads it, and the
/// hardware prefetchers start late at each head's array (measured on the
/// Xeon, a batched step at depth 400: attention takes half as long again
/// without these). A prefetch never faults, so the addresses may lie past
/// the end.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn prefetch_position(
    kp: *const half::f16,
    vp: *const half::f16,
    base: usize,
    stride: usize,
    len: usize,
) {
    let bytes = 2 * len;
    let (k, v) = (
        kp.wrapping_add(base + 8 * stride).cast::<i8>(),
        vp.wrapping_add(base).cast::<i8>(),
    );
    for line in (0..bytes).step_by(64).chain([bytes - 1]) {
        _mm_prefetch::<_MM_HINT_T0>(k.wrapping_add(line));
        _mm_prefetch::<_MM_HINT_T0>(v.wrapping_add(line));
    }
}

/// Horizontal sum in ggml's order: the two halves added, then pairwise.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum_pairwise(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_hadd_ps(s, s))
}

/// [`super::quant::quantize_q8_1`] in 256-bit vectors, block for block the
/// same bytes (see [`super::vnni::quantize_q8_1`], the same steps in
/// 512-bit vectors): eight blocks at a time, their largest magnitudes and
/// their sums reduced together (`reduce8`), one block to a lane, and
/// their scales computed in one vector; the blocks left over go through
/// the plain code.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * QK, "one block per 32 values");
    let whole = out.len() / 8 * 8;
    let (x8, rest) = x.split_at(whole * QK);
    let (out8, out_rest) = out.split_at_mut(whole);
    for (xs, bs) in x8.chunks_exact(8 * QK).zip(out8.chunks_exact_mut(8)) {
        q8_1_eight(xs, bs);
    }
    super::quant::quantize_q8_1(rest, out_rest);
}

/// Which block each of [`reduce8`]'s inputs holds so that block `b`'s
/// result lands in lane `b`: the tree leaves input `2k + l`'s in lane
/// `4l + k`.
const TREE_ORDER: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// Reduces eight vectors of eight f32 lanes with `op` (commutative and
/// associative: max, or an integer add through casts) into one vector
/// whose lane `4l + k` is input `2k + l`'s reduction: three rounds, each
/// pairing the vectors and halving the lanes each input still spans.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce8(v: [__m256; 8], op: impl Fn(__m256, __m256) -> __m256) -> __m256 {
    let a: [__m256; 4] = std::array::from_fn(|i| {
        let (x, y) = (v[2 * i], v[2 * i + 1]);
        op(
            _mm256_permute2f128_ps::<0x20>(x, y),
            _mm256_permute2f128_ps::<0x31>(x, y),
        )
    });
    let b: [__m256; 2] = std::array::from_fn(|i| {
        let (x, y) = (a[2 * i], a[2 * i + 1]);
        op(
            _mm256_shuffle_ps::<0b01_00_01_00>(x, y),
            _mm256_shuffle_ps::<0b11_10_11_10>(x, y),
        )
    });
    op(
        _mm256_shuffle_ps::<0b10_00_10_00>(b[0], b[1]),
        _mm256_shuffle_ps::<0b11_01_11_01>(b[0], b[1]),
    )
}

/// Eight Q8_1 blocks (see [`quantize_q8_1`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_1_eight(x: &[f32], out: &mut [BlockQ8_1]) {
    let magnitude = |v: __m256| _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF)));
    let block = |b: usize| -> [__m256; 4] {
        let xs = &x[b * QK..][..QK];
        // SAFETY: `xs` is 32 readable f32.
        std::array::from_fn(|i| unsafe { _mm256_loadu_ps(xs.as_ptr().add(8 * i)) })
    };
    let largest = reduce8(
        TREE_ORDER.map(|b| {
            let v = block(b).map(magnitude);
            _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]))
        }),
        |p, q| _mm256_max_ps(p, q),
    );
    let d = _mm256_div_ps(largest, _mm256_set1_ps(127.0));
    // `inverse_scale`: 1 / d, or 0 where that is not finite.
    let id = _mm256_div_ps(_mm256_set1_ps(1.0), d);
    let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(magnitude(id), _mm256_set1_ps(f32::INFINITY));
    let id = lanes(_mm256_and_ps(id, finite));
    let (sign, half, one) = (_mm256_set1_ps(-0.0), _mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
    let mut sums = [_mm256_setzero_ps(); 8];
    for (slot, &b) in TREE_ORDER.iter().enumerate() {
        let scale = _mm256_set1_ps(id[b]);
        // Rounded half away from zero: the truncated value, plus one step
        // away from zero where the dropped fraction is a half or more.
        let r = block(b).map(|v| {
            let p = _mm256_mul_ps(v, scale);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
            let away = _mm256_cmp_ps::<_CMP_GE_OQ>(magnitude(_mm256_sub_ps(p, t)), half);
            let step = _mm256_or_ps(_mm256_and_ps(p, sign), one);
            _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(step, away)))
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
        sums[slot] = _mm256_castsi256_ps(sum);
        // To bytes: the packs interleave the 128-bit halves, the
        // permutation puts the four runs of eight back in order.
        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `qs` is 32 writable bytes.
        unsafe { _mm256_storeu_si256(out[b].qs.as_mut_ptr().cast(), bytes) };
    }
    let sum = _mm256_castps_si256(reduce8(sums, |p, q| {
        _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_castps_si256(q)))
    }));
    // `q8_1_scales`: d and d × sum, each rounded to f16.
    let to_f16 = |v| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
    let ds = lanes(to_f16(d));
    let ss = lanes(to_f16(_mm256_mul_ps(d, _mm256_cvtepi32_ps(sum))));
    for (b, o) in out.iter_mut().enumerate() {
        (o.d, o.s) = (ds[b], ss[b]);
    }
}
