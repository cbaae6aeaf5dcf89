//! Sample blocks, and the bit-for-bit comparison of two kernel sets.
//!
//! The samples are random blocks and edge cases (all zeros, the largest
//! values each format holds) in odd numbers of blocks: the kernel tests
//! run on them, and so does [`same_byte_results`], which
//! [`super::Kernels::detect`] runs once before it lets the AVX-512 VNNI
//! kernels stand in for AVX2's.

use bytemuck::Zeroable;
use half::f16;

use super::quant::*;
use super::{Dot8, Dot16, Kernels};

/// A small deterministic generator (xorshift); samples need no crate for it.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    /// Uniform in [-1, 1).
    pub(super) fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub(super) fn f16(&mut self, scale: f32) -> f16 {
        f16::from_f32(self.unit() * scale)
    }
    pub(super) fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Fill {
    Random,
    Zeros,
    Max,
}

pub(super) const FILLS: [Fill; 3] = [Fill::Random, Fill::Zeros, Fill::Max];
pub(super) const BLOCK_COUNTS: [usize; 6] = [1, 2, 3, 7, 18, 48];

pub(super) fn q4_0_blocks(rng: &mut Rng, n: usize, fill: Fill) -> Vec<BlockQ4_0> {
    (0..n)
        .map(|_| match fill {
            Fill::Random => BlockQ4_0 {
                d: rng.f16(0.1),
                qs: std::array::from_fn(|_| rng.byte()),
            },
            Fill::Zeros => BlockQ4_0::zeroed(),
            Fill::Max => BlockQ4_0 {
                d: f16::from_f32(-4.0),
                qs: [0x0F; 16],
            },
        })
        .collect()
}

pub(super) fn q4_1_blocks(rng: &mut Rng, n: usize, fill: Fill) -> Vec<BlockQ4_1> {
    (0..n)
        .map(|_| match fill {
            Fill::Random => BlockQ4_1 {
                d: rng.f16(0.1),
                m: rng.f16(0.5),
                qs: std::array::from_fn(|_| rng.byte()),
            },
            Fill::Zeros => BlockQ4_1::zeroed(),
            Fill::Max => BlockQ4_1 {
                d: f16::from_f32(4.0),
                m: f16::from_f32(-30.0),
                qs: [0xFF; 16],
            },
        })
        .collect()
}

pub(super) fn q4k_blocks(rng: &mut Rng, n: usize, fill: Fill) -> Vec<BlockQ4K> {
    (0..n)
        .map(|_| match fill {
            Fill::Random => BlockQ4K {
                d: rng.f16(0.01),
                dmin: rng.f16(0.01),
                scales: std::array::from_fn(|_| rng.byte()),
                qs: std::array::from_fn(|_| rng.byte()),
            },
            Fill::Zeros => BlockQ4K::zeroed(),
            // Every 6-bit scale and min at 63, every nibble at 15.
            Fill::Max => BlockQ4K {
                d: f16::from_f32(0.5),
                dmin: f16::from_f32(0.5),
                scales: [0xFF; 12],
                qs: [0xFF; 128],
            },
        })
        .collect()
}

pub(super) fn q6k_blocks(rng: &mut Rng, n: usize, fill: Fill) -> Vec<BlockQ6K> {
    (0..n)
        .map(|_| match fill {
            Fill::Random => BlockQ6K {
                ql: std::array::from_fn(|_| rng.byte()),
                qh: std::array::from_fn(|_| rng.byte()),
                scales: std::array::from_fn(|_| rng.byte() as i8),
                d: rng.f16(0.01),
            },
            Fill::Zeros => BlockQ6K::zeroed(),
            // Every value at -32 (q = 0), the scales at both extremes.
            Fill::Max => BlockQ6K {
                ql: [0; 128],
                qh: [0; 64],
                scales: std::array::from_fn(|s| if s % 2 == 0 { i8::MIN } else { i8::MAX }),
                d: f16::from_f32(0.5),
            },
        })
        .collect()
}

pub(super) fn q5_0_blocks(rng: &mut Rng, n: usize, fill: Fill) -> Vec<BlockQ5_0> {
    (0..n)
        .map(|_| match fill {
            Fill::Random => BlockQ5_0 {
                d: rng.f16(0.1),
                qh: std::array::from_fn(|_| rng.byte()),
                qs: std::array::from_fn(|_| rng.byte()),
            },
            Fill::Zeros => BlockQ5_0::zeroed(),
            // Every value at -16, the largest magnitude.
            Fill::Max => BlockQ5_0 {
                d: f16::from_f32(4.0),
                qh: [0; 4],
                qs: [0; 16],
            },
        })
        .collect()
}

pub(super) fn q8_0_blocks(rng: &mut Rng, n: usize, fill: Fill) -> Vec<BlockQ8_0> {
    (0..n)
        .map(|i| match fill {
            Fill::Random => BlockQ8_0 {
                d: rng.f16(0.05),
                qs: std::array::from_fn(|_| (rng.byte() as i8).max(-127)),
            },
            Fill::Zeros => BlockQ8_0::zeroed(),
            // ±127 alternating by block: the extremes of both signs.
            Fill::Max => BlockQ8_0 {
                d: f16::from_f32(2.0),
                qs: [if i % 2 == 0 { 127 } else { -127 }; 32],
            },
        })
        .collect()
}

pub(super) fn activations(rng: &mut Rng, n: usize, fill: Fill) -> Vec<f32> {
    match fill {
        Fill::Random => rng.values(n, 3.0),
        Fill::Zeros => vec![0.0; n],
        Fill::Max => (0..n)
            .map(|i| if i % 3 == 0 { -1000.0 } else { 1000.0 })
            .collect(),
    }
}

/// The block counts of the check before use (the shorter ones: it runs in
/// every process that loads a model; the tests run them all).
pub const BEFORE_USE: [usize; 4] = [1, 2, 3, 7];

/// Runs `check(weights fill, activation fill, blocks)` for every case.
#[cfg(test)]
pub(super) fn cases(check: impl FnMut(&mut Rng, Fill, Fill, usize)) {
    cases_of(&BLOCK_COUNTS, check)
}

/// [`cases`] with only these block counts.
fn cases_of(counts: &[usize], mut check: impl FnMut(&mut Rng, Fill, Fill, usize)) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for wf in FILLS {
        for af in FILLS {
            for &n in counts {
                for _ in 0..4 {
                    check(&mut rng, wf, af, n);
                }
            }
        }
    }
}

/// Eight rows' blocks interleaved into groups: the rows in order, and in
/// reverse order (a second group).
fn groups<B, G>(rows: &[Vec<B>], interleave: fn([&B; 8]) -> G) -> [Vec<G>; 2] {
    [false, true].map(|reversed| {
        (0..rows[0].len())
            .map(|i| {
                interleave(std::array::from_fn(|r| {
                    &rows[if reversed { 7 - r } else { r }][i]
                }))
            })
            .collect()
    })
}

/// Two sets' sixteen-row kernels on the same groups and activation rows.
fn sixteen<W, A>(kernels: [Dot16<W, A>; 2], w: &[Vec<W>; 2], y: &[&[A]]) -> [Vec<f32>; 2] {
    kernels.map(|k| {
        let mut out = vec![[0.0f32; 16]; y.len()];
        k([&w[0], &w[1]], y, &mut out);
        out.into_flattened()
    })
}

/// Two sets' eight-row kernels on the same group and activation rows.
fn eight<W, A>(kernels: [Dot8<W, A>; 2], w: &[W], y: &[&[A]]) -> [Vec<f32>; 2] {
    kernels.map(|k| {
        let mut out = vec![[0.0f32; 8]; y.len()];
        k(w, y, &mut out);
        out.into_flattened()
    })
}

/// Whether `b`'s byte-quantized kernels (Q4_0, Q4_1, Q5_0, Q8_0 in their
/// one-, four-, eight- and sixteen-row forms, and Q4_K's and Q6_K's
/// eight- and sixteen-row ones) give exactly `a`'s results on every sample: the first
/// difference otherwise, named by kernel and case.
pub fn same_byte_results(a: &Kernels, b: &Kernels) -> Result<(), String> {
    same_byte_results_on(a, b, &BLOCK_COUNTS)
}

/// [`same_byte_results`] on the samples of these block counts only.
pub fn same_byte_results_on(a: &Kernels, b: &Kernels, counts: &[usize]) -> Result<(), String> {
    let acts_of = |rng: &mut Rng, n: usize, f: Fill| {
        let x = activations(rng, n * QK, f);
        let (mut a0, mut a1) = (vec![BlockQ8_0::zeroed(); n], vec![BlockQ8_1::zeroed(); n]);
        let mut a0s = vec![BlockQ8_0S::zeroed(); n];
        quantize_q8_0(&x, &mut a0);
        quantize_q8_1(&x, &mut a1);
        quantize_q8_0s(&x, &mut a0s);
        (a0, a1, a0s)
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut verdict = Ok(());
    cases_of(counts, |rng, wf, af, n| {
        if verdict.is_err() {
            return;
        }
        let fill = |j: usize| if j.is_multiple_of(3) { af } else { FILLS[j % 3] };
        let acts: Vec<_> = (0..8).map(|j| acts_of(rng, n, fill(j))).collect();
        let (y0, y1): (Vec<&[BlockQ8_0]>, Vec<&[BlockQ8_1]>) =
            acts.iter().map(|(a0, a1, _)| (&a0[..], &a1[..])).unzip();
        let y0s: Vec<&[BlockQ8_0S]> = acts.iter().map(|(_, _, a)| &a[..]).collect();
        let w40 = q4_0_blocks(rng, n, wf);
        let w50 = q5_0_blocks(rng, n, wf);
        let w41: Vec<_> = (0..8).map(|r| q4_1_blocks(rng, n, fill(r))).collect();
        let w80: Vec<_> = (0..8).map(|r| q8_0_blocks(rng, n, fill(r))).collect();
        let mut same = |x: &[f32], y: &[f32], kernel: &str| {
            if verdict.is_ok() && bits(x) != bits(y) {
                verdict = Err(format!(
                    "{kernel}, weights {wf:?}, activations {af:?}, {n} blocks: {} gives {x:?}, {} gives {y:?}",
                    a.name, b.name
                ));
            }
        };
        // The Q8_1 quantizers, on this case's activations (as bytes read as
        // f32: only the bits are compared).
        let x = activations(rng, n * QK, af);
        let (mut qa, mut qb) = (vec![BlockQ8_1::zeroed(); n], vec![BlockQ8_1::zeroed(); n]);
        (a.quantize_q8_1)(&x, &mut qa);
        (b.quantize_q8_1)(&x, &mut qb);
        same(
            bytemuck::cast_slice(&qa),
            bytemuck::cast_slice(&qb),
            "quantize_q8_1",
        );
        same(&[(a.q4_0)(&w40, y0[0])], &[(b.q4_0)(&w40, y0[0])], "q4_0");
        same(&[(a.q4_1)(&w41[0], y1[0])], &[(b.q4_1)(&w41[0], y1[0])], "q4_1");
        same(&[(a.q8_0)(&w80[0], y0[0])], &[(b.q8_0)(&w80[0], y0[0])], "q8_0");
        same(&[(a.q5_0)(&w50, y0[0])], &[(b.q5_0)(&w50, y0[0])], "q5_0");
        let f0: [&[BlockQ8_0]; 4] = y0[..4].try_into().unwrap();
        let f1: [&[BlockQ8_1]; 4] = y1[..4].try_into().unwrap();
        same(&(a.q4_0x4)(&w40, f0), &(b.q4_0x4)(&w40, f0), "q4_0x4");
        same(&(a.q4_1x4)(&w41[1], f1), &(b.q4_1x4)(&w41[1], f1), "q4_1x4");
        same(&(a.q8_0x4)(&w80[1], f0), &(b.q8_0x4)(&w80[1], f0), "q8_0x4");
        same(&(a.q5_0x4)(&w50, f0), &(b.q5_0x4)(&w50, f0), "q5_0x4");
        // Each format's rows as two groups: in order, and reversed.
        let g41 = groups(&w41, BlockQ4_1x8::interleave);
        let g80 = groups(&w80, BlockQ8_0x8::interleave);
        let w50s: Vec<_> = (0..8).map(|r| q5_0_blocks(rng, n, fill(r))).collect();
        let g50 = groups(&w50s, BlockQ5_0x8::interleave);
        // The K-quants: super-blocks of 256, with activations of their own.
        let nk = n.div_ceil(4);
        let w4k: Vec<_> = (0..8).map(|r| q4k_blocks(rng, nk, fill(r))).collect();
        let g4k = groups(&w4k, BlockQ4Kx8::interleave);
        let w6k: Vec<_> = (0..8).map(|r| q6k_blocks(rng, nk, fill(r))).collect();
        let g6k = groups(&w6k, BlockQ6Kx8::interleave);
        let yk: Vec<Vec<BlockQ8K>> = (0..8)
            .map(|j| {
                let mut a = vec![BlockQ8K::zeroed(); nk];
                quantize_q8k(&activations(rng, nk * QK_K, fill(j)), &mut a);
                a
            })
            .collect();
        let yk: Vec<&[BlockQ8K]> = yk.iter().map(|a| &a[..]).collect();
        for m in 1..=8 {
            for (kernel, [x, y]) in [
                ("q4_1x16", sixteen([a.q4_1x16, b.q4_1x16], &g41, &y1[..m])),
                ("q8_0x16", sixteen([a.q8_0x16, b.q8_0x16], &g80, &y0s[..m])),
                ("q5_0x16", sixteen([a.q5_0x16, b.q5_0x16], &g50, &y0s[..m])),
                ("q4kx16", sixteen([a.q4kx16, b.q4kx16], &g4k, &yk[..m])),
                ("q6kx16", sixteen([a.q6kx16, b.q6kx16], &g6k, &yk[..m])),
                ("q4_1x8", eight([a.q4_1x8, b.q4_1x8], &g41[0], &y1[..m])),
                ("q8_0x8", eight([a.q8_0x8, b.q8_0x8], &g80[0], &y0s[..m])),
                ("q5_0x8", eight([a.q5_0x8, b.q5_0x8], &g50[0], &y0s[..m])),
                ("q4kx8", eight([a.q4kx8, b.q4kx8], &g4k[0], &yk[..m])),
                ("q6kx8", eight([a.q6kx8, b.q6kx8], &g6k[0], &yk[..m])),
            ] {
                same(&x, &y, &format!("{kernel} with {m} rows"));
            }
        }
    });
    verdict
}
