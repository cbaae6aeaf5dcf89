//! Every kernel against the plain reference, and the reference against
//! expanded f32 arithmetic, on random blocks and edge cases: all zeros,
//! the largest values each format holds, and odd numbers of blocks.

use bytemuck::Zeroable;

use super::parity::*;
use super::quant::*;
use super::*;

/// Agreement up to float rounding, relative to the size of the terms.
fn assert_close(got: f32, want: f32, magnitude: f32, what: &str) {
    let tol = 1e-5 * magnitude.max(1.0);
    assert!(
        (got - want).abs() <= tol,
        "{what}: {got} vs reference {want} (tolerance {tol})"
    );
}

fn abs_dot(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).map(|(a, b)| (a * b).abs()).sum()
}

fn kernel_sets() -> Vec<Kernels> {
    let mut sets = vec![Kernels::PORTABLE];
    sets.extend(Kernels::avx2());
    sets.extend(Kernels::avx512vnni());
    sets
}

/// The reference `want` against the same dot product in expanded f32
/// arithmetic (within `slack` times the tolerance of `mag`), then every
/// kernel set's `kernel` against the reference.
fn check_against_reference(
    want: f32,
    expanded: f32,
    mag: f32,
    slack: f32,
    what: &str,
    kernel: impl Fn(&Kernels) -> f32,
) {
    assert_close(want, expanded, mag * slack, &format!("reference vs f32, {what}"));
    for k in kernel_sets() {
        assert_close(kernel(&k), want, mag, &format!("{} {what}", k.name));
    }
}

/// The four-row kernels give exactly what the same set's single kernel
/// gives (same sums in the same order), on `a` and three rows of other fills.
#[allow(clippy::too_many_arguments)]
fn check_x4<W, A: Pod + Zeroable>(
    rng: &mut Rng,
    w: &[W],
    a: &[A],
    block: usize,
    single: fn(&Kernels) -> Dot<W, A>,
    four: fn(&Kernels) -> Dot4<W, A>,
    quantize: fn(&[f32], &mut [A]),
    what: &str,
) {
    let n = a.len();
    let others: Vec<Vec<A>> = FILLS
        .iter()
        .map(|&f| {
            let mut b = vec![A::zeroed(); n];
            quantize(&activations(rng, n * block, f), &mut b);
            b
        })
        .collect();
    let rows: [&[A]; 4] = [a, &others[0], &others[1], &others[2]];
    for k in kernel_sets() {
        let got = four(&k)(w, rows);
        for (j, row) in rows.iter().enumerate() {
            assert_eq!(
                got[j],
                single(&k)(w, row),
                "{} {what} x4, row {j} of {n} blocks",
                k.name
            );
        }
    }
}

/// A format with Q8_0 activations: its kernels against the reference, and
/// its four-row kernels against its one-row ones.
fn check_with_q8_0_acts<W: Pod>(
    name: &str,
    blocks: fn(&mut Rng, usize, Fill) -> Vec<W>,
    dequantize: fn(&[W], &mut [f32]),
    reference: Dot<W, BlockQ8_0>,
    one: fn(&Kernels) -> Dot<W, BlockQ8_0>,
    four: fn(&Kernels) -> Dot4<W, BlockQ8_0>,
) {
    cases(|rng, wf, af, n| {
        let w = blocks(rng, n, wf);
        let mut a = vec![BlockQ8_0::zeroed(); n];
        quantize_q8_0(&activations(rng, n * QK, af), &mut a);
        let (mut wx, mut ax) = (vec![0.0; n * QK], vec![0.0; n * QK]);
        dequantize(&w, &mut wx);
        dequantize_q8_0(&a, &mut ax);
        let want = reference(&w, &a);
        let mag = abs_dot(&wx, &ax);
        let what = format!("{name} {wf:?}/{af:?}/{n}");
        check_against_reference(want, dot_f32(&wx, &ax), mag, 1.0, &what, |k| one(k)(&w, &a));
        check_x4(rng, &w, &a, QK, one, four, quantize_q8_0, name);
    });
}

#[test]
fn q4_0_kernels_match_the_reference() {
    check_with_q8_0_acts(
        "q4_0",
        q4_0_blocks,
        dequantize_q4_0,
        dot_q4_0,
        |k| k.q4_0,
        |k| k.q4_0x4,
    );
}

#[test]
fn q4_1_kernels_match_the_reference() {
    cases(|rng, wf, af, n| {
        let w = q4_1_blocks(rng, n, wf);
        let mut a = vec![BlockQ8_1::zeroed(); n];
        quantize_q8_1(&activations(rng, n * QK, af), &mut a);
        let mut wx = vec![0.0; n * QK];
        dequantize_q4_1(&w, &mut wx);
        // Q8_1 expands like Q8_0; its `s` is d times the sum of its values.
        let ax: Vec<f32> = a.iter().flat_map(|b| b.qs.map(|q| b.d * q as f32)).collect();
        for b in &a {
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            assert_close(b.s, b.d * sum as f32, 1e3 * b.s.abs(), "q8_1 sum");
            // The scales are f16 values, as ggml stores them.
            assert_eq!(f16::from_f32(b.d).to_f32(), b.d);
            assert_eq!(f16::from_f32(b.s).to_f32(), b.s);
        }
        let want = dot_q4_1(&w, &a);
        let mag = abs_dot(&wx, &ax) * 1.01;
        let what = format!("q4_1 {wf:?}/{af:?}/{n}");
        check_against_reference(want, dot_f32(&wx, &ax), mag, 1e2, &what, |k| (k.q4_1)(&w, &a));
        check_x4(rng, &w, &a, QK, |k| k.q4_1, |k| k.q4_1x4, quantize_q8_1, "q4_1");
    });
}

/// One interleaved format under test: how to make, interleave and undo
/// its blocks, its activations, and its reference and kernels.
struct Interleaved<W, G, A> {
    name: &'static str,
    /// Values in a block (of each row).
    values: usize,
    blocks: fn(&mut Rng, usize, Fill) -> Vec<W>,
    interleave: fn([&W; 8]) -> G,
    row: fn(&G, usize) -> W,
    dequantize: fn(&[W], &mut [f32]),
    quantize: fn(&[f32], &mut [A]),
    /// An activation row's values as the kernels see them.
    expand: fn(&[A]) -> Vec<f32>,
    /// What the weights add beyond `w · a` to the size of the terms (Q4_1's
    /// offsets).
    offsets: fn(&[W]) -> f32,
    reference: fn(&[W], &[A]) -> f32,
    kernel: fn(&Kernels) -> Dot8<G, A>,
    kernel16: fn(&Kernels) -> Dot16<G, A>,
}

impl<W: Pod, G: Pod, A: Pod + Zeroable> Interleaved<W, G, A> {
    /// The eight-row kernels on interleaved rows: each lane within
    /// rounding of the reference dot product of its own row (the kernels
    /// sum in another order), and two to eight activation rows at once
    /// exactly as each alone. The eight rows mix fills, so zero and extreme rows
    /// sit beside random ones.
    fn check(&self) {
        cases(|rng, wf, af, n| {
            // Super-blocks of 256 for the K-quants: 1, 1, 1, 2, 5, 12.
            let n = if self.values == QK_K { n.div_ceil(4) } else { n };
            let rows: Vec<Vec<W>> = (0..8)
                .map(|r| (self.blocks)(rng, n, if r % 3 == 0 { wf } else { FILLS[r % 3] }))
                .collect();
            let x8: Vec<G> = (0..n)
                .map(|b| (self.interleave)(std::array::from_fn(|r| &rows[r][b])))
                .collect();
            let reversed: Vec<G> = (0..n)
                .map(|b| (self.interleave)(std::array::from_fn(|r| &rows[7 - r][b])))
                .collect();
            for (r, row) in rows.iter().enumerate() {
                let back: Vec<W> = x8.iter().map(|b| (self.row)(b, r)).collect();
                assert_eq!(
                    bytemuck::cast_slice::<_, u8>(&back),
                    bytemuck::cast_slice::<_, u8>(row)
                );
            }
            let fills = [
                af,
                Fill::Random,
                Fill::Max,
                Fill::Zeros,
                Fill::Random,
                af,
                Fill::Max,
                Fill::Random,
            ];
            let acts: Vec<Vec<A>> = fills
                .iter()
                .map(|&f| {
                    let mut a = vec![A::zeroed(); n];
                    (self.quantize)(&activations(rng, n * self.values, f), &mut a);
                    a
                })
                .collect();
            for k in kernel_sets() {
                let dot = (self.kernel)(&k);
                let mut one = vec![[0.0f32; 8]; acts.len()];
                for (j, a) in acts.iter().enumerate() {
                    dot(&x8, &[a], &mut one[j..j + 1]);
                    let ax = (self.expand)(a);
                    for (r, row) in rows.iter().enumerate() {
                        let mut wx = vec![0.0; n * self.values];
                        (self.dequantize)(row, &mut wx);
                        let mag = abs_dot(&wx, &ax) * 1.01 + (self.offsets)(row);
                        let what = format!("{} {} {wf:?}/{af:?}/{n} row {r}", k.name, self.name);
                        assert_close(one[j][r], (self.reference)(row, a), mag, &what);
                    }
                }
                // The portable set's many-row forms are its one-row
                // reference, row by row: nothing more to compare.
                if k.name == "portable" {
                    continue;
                }
                for m in 2..=acts.len() {
                    let ys: Vec<&[A]> = acts[..m].iter().map(|a| &a[..]).collect();
                    let mut many = vec![[0.0f32; 8]; m];
                    dot(&x8, &ys, &mut many);
                    assert_eq!(many, one[..m], "{} {} rows at once vs one at a time", k.name, m);
                }
                // Two groups at once (the second: the rows in reverse
                // order), each exactly as the eight-row kernel gives it.
                let dot16 = (self.kernel16)(&k);
                for m in 1..=acts.len() {
                    let ys: Vec<&[A]> = acts[..m].iter().map(|a| &a[..]).collect();
                    let (mut first, mut second) = (vec![[0.0f32; 8]; m], vec![[0.0f32; 8]; m]);
                    dot(&x8, &ys, &mut first);
                    dot(&reversed, &ys, &mut second);
                    let mut both = vec![[0.0f32; 16]; m];
                    dot16([&x8, &reversed], &ys, &mut both);
                    for j in 0..m {
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&both[j]),
                            bits(&[first[j], second[j]].concat()),
                            "{} {} sixteen rows, {m} activation rows, row {j}",
                            k.name,
                            self.name
                        );
                    }
                }
            }
        });
    }
}

#[test]
fn interleaved_q4_1_kernels_match_the_reference() {
    Interleaved {
        name: "q4_1x8",
        values: QK,
        blocks: q4_1_blocks,
        interleave: BlockQ4_1x8::interleave,
        row: BlockQ4_1x8::row,
        dequantize: dequantize_q4_1,
        quantize: quantize_q8_1,
        expand: |a: &[BlockQ8_1]| a.iter().flat_map(|b| b.qs.map(|q| b.d * q as f32)).collect(),
        offsets: |w: &[BlockQ4_1]| w.iter().map(|b| b.m.to_f32().abs()).sum(),
        reference: dot_q4_1,
        kernel: |k| k.q4_1x8,
        kernel16: |k| k.q4_1x16,
    }
    .check();
}

#[test]
fn interleaved_q8_0_kernels_match_the_reference() {
    Interleaved {
        name: "q8_0x8",
        values: QK,
        blocks: q8_0_blocks,
        interleave: BlockQ8_0x8::interleave,
        row: BlockQ8_0x8::row,
        dequantize: dequantize_q8_0,
        quantize: quantize_q8_0s,
        expand: |a: &[BlockQ8_0S]| {
            a.iter()
                .flat_map(|b| b.qs.map(|q| b.d.to_f32() * q as f32))
                .collect()
        },
        offsets: |_| 0.0,
        reference: |w, a| dot_q8_0(w, &a.iter().map(BlockQ8_0S::q8_0).collect::<Vec<_>>()),
        kernel: |k| k.q8_0x8,
        kernel16: |k| k.q8_0x16,
    }
    .check();
}

#[test]
fn interleaved_q5_0_kernels_match_the_reference() {
    Interleaved {
        name: "q5_0x8",
        values: QK,
        blocks: q5_0_blocks,
        interleave: BlockQ5_0x8::interleave,
        row: BlockQ5_0x8::row,
        dequantize: dequantize_q5_0,
        quantize: quantize_q8_0s,
        expand: |a: &[BlockQ8_0S]| {
            a.iter()
                .flat_map(|b| b.qs.map(|q| b.d.to_f32() * q as f32))
                .collect()
        },
        offsets: |_| 0.0,
        reference: |w, a| dot_q5_0(w, &a.iter().map(BlockQ8_0S::q8_0).collect::<Vec<_>>()),
        kernel: |k| k.q5_0x8,
        kernel16: |k| k.q5_0x16,
    }
    .check();
}

/// The eight-row Q5_0 kernels at their largest sums: every weight at +15
/// (stored as 31) against every activation at +127. The AVX2 kernel adds
/// two runs' products in 16 bits before they widen, 4 × 2 × 31 × 127 =
/// 31,496 here, just inside what 16 bits hold; the random and extreme
/// cases elsewhere (the extreme weight is -16, stored as 0) do not come
/// near that.
#[test]
fn interleaved_q5_0_sums_at_their_largest_fit() {
    let n = 3;
    let row = vec![
        BlockQ5_0 {
            d: f16::from_f32(1.0),
            qh: [0xFF; 4],
            qs: [0xFF; 16],
        };
        n
    ];
    let group: Vec<BlockQ5_0x8> = (0..n).map(|b| BlockQ5_0x8::interleave([&row[b]; 8])).collect();
    let mut a = vec![BlockQ8_0S::zeroed(); n];
    quantize_q8_0s(&vec![1.0; n * QK], &mut a);
    assert!(a.iter().all(|b| b.qs == [127; QK]));
    let want = dot_q5_0(&row, &a.iter().map(BlockQ8_0S::q8_0).collect::<Vec<_>>());
    for k in kernel_sets() {
        for m in [1, 8] {
            let mut out = vec![[0.0f32; 8]; m];
            (k.q5_0x8)(&group, &vec![&a[..]; m], &mut out);
            for (j, sums) in out.iter().enumerate() {
                for (r, &got) in sums.iter().enumerate() {
                    let what = format!("{} q5_0x8, {m} rows: row {r}, activation row {j}", k.name);
                    assert_close(got, want, want, &what);
                }
            }
        }
    }
}

#[test]
fn interleaved_q4k_kernels_match_the_reference() {
    Interleaved {
        name: "q4kx8",
        values: QK_K,
        blocks: q4k_blocks,
        interleave: BlockQ4Kx8::interleave,
        row: BlockQ4Kx8::row,
        dequantize: dequantize_q4k,
        quantize: quantize_q8k,
        expand: |a: &[BlockQ8K]| a.iter().flat_map(|b| b.qs.map(|q| b.d * q as f32)).collect(),
        // The mins' part of the sum, at its largest.
        offsets: |w: &[BlockQ4K]| {
            w.iter()
                .map(|b| b.dmin.to_f32().abs() * 63.0 * 128.0 * 256.0)
                .sum()
        },
        reference: dot_q4k,
        kernel: |k| k.q4kx8,
        kernel16: |k| k.q4kx16,
    }
    .check();
}

#[test]
fn interleaved_q6k_kernels_match_the_reference() {
    Interleaved {
        name: "q6kx8",
        values: QK_K,
        blocks: q6k_blocks,
        interleave: BlockQ6Kx8::interleave,
        row: BlockQ6Kx8::row,
        dequantize: dequantize_q6k,
        quantize: quantize_q8k,
        expand: |a: &[BlockQ8K]| a.iter().flat_map(|b| b.qs.map(|q| b.d * q as f32)).collect(),
        offsets: |_| 0.0,
        reference: dot_q6k,
        kernel: |k| k.q6kx8,
        kernel16: |k| k.q6kx16,
    }
    .check();
}

/// The AVX-512 VNNI kernels give exactly AVX2's results (the same integer
/// sums, then the same float operations), so a model's outputs do not
/// depend on which of the two a CPU gets. Runs where the CPU has AVX-512
/// VNNI (whatever `TRIAGE_KERNELS` says).
#[test]
fn vnni_kernels_give_avx2_results_bit_for_bit() {
    let (Some(avx2), Some(vnni)) = (Kernels::avx2(), Kernels::avx512vnni()) else {
        eprintln!("this CPU has no AVX-512 VNNI: the VNNI kernels cannot run here");
        return;
    };
    if let Err(difference) = same_byte_results(&avx2, &vnni) {
        panic!("{difference}");
    }
}

/// Q8_0 activations with block sums are Q8_0's, plus the right sums; the
/// interleaved Q8_0 weights (stored plus 128) give their rows back.
#[test]
fn q8_0_blocks_with_sums_and_offset_weights_round_trip() {
    let mut rng = Rng(11);
    for fill in FILLS {
        let x = activations(&mut rng, 5 * QK, fill);
        let (mut plain, mut summed) = (vec![BlockQ8_0::zeroed(); 5], vec![BlockQ8_0S::zeroed(); 5]);
        quantize_q8_0(&x, &mut plain);
        quantize_q8_0s(&x, &mut summed);
        for (p, s) in plain.iter().zip(&summed) {
            assert_eq!(bytemuck::bytes_of(p), bytemuck::bytes_of(&s.q8_0()));
            assert_eq!(s.sum as i32, s.qs.iter().map(|&q| q as i32).sum::<i32>());
        }
        let rows: Vec<_> = (0..8).map(|_| q8_0_blocks(&mut rng, 1, fill)).collect();
        let group = BlockQ8_0x8::interleave(std::array::from_fn(|r| &rows[r][0]));
        for (r, row) in rows.iter().enumerate() {
            assert_eq!(bytemuck::bytes_of(&group.row(r)), bytemuck::bytes_of(&row[0]));
        }
    }
}

/// The check that admits the VNNI kernels catches a set that is off by
/// the least step in one output of one case, and says where.
#[test]
fn a_kernel_set_that_differs_in_one_bit_is_caught() {
    // AVX2's set where the CPU has it: checking the portable set takes
    // far longer, in the emulator above all.
    fn base() -> Kernels {
        Kernels::avx2().unwrap_or(Kernels::PORTABLE)
    }
    fn off_in_the_fifth_row(x: &[BlockQ8_0x8], y: &[&[BlockQ8_0S]], out: &mut [[f32; 8]]) {
        (base().q8_0x8)(x, y, out);
        if y.len() == 5 && x.len() == 7 {
            out[4][3] = f32::from_bits(out[4][3].to_bits() ^ 1);
        }
    }
    let base = base();
    assert_eq!(same_byte_results(&base, &base), Ok(()));
    let broken = Kernels {
        name: "broken",
        q8_0x8: off_in_the_fifth_row,
        ..base
    };
    let difference = same_byte_results(&base, &broken).unwrap_err();
    let first = format!(
        "q8_0x8 with 5 rows, weights Random, activations Random, 7 blocks: {} gives",
        base.name
    );
    assert!(difference.starts_with(&first), "{difference}");
    assert!(difference.contains("broken gives"), "{difference}");
    // A VNNI set that fails the check is not used, by default or when asked for.
    for wanted in ["", "avx512vnni"] {
        let (k, warning) = Kernels::choose_from(wanted, Some(base), Some(broken));
        assert_eq!(k.name, base.name);
        let warning = warning.expect("a warning");
        assert!(
            warning.contains("the AVX-512 VNNI kernels differ from AVX2's on this CPU"),
            "{warning}"
        );
        assert!(warning.contains("q8_0x8 with 5 rows"), "{warning}");
    }
}

#[test]
fn triage_kernels_picks_a_set_and_says_when_it_cannot() {
    let (avx2, vnni) = (Kernels::avx2(), Kernels::avx512vnni());
    let choose = |wanted| Kernels::choose_from(wanted, avx2, vnni);
    let best_without_vnni = avx2.map_or("portable", |k| k.name);
    let fastest = vnni.map_or(best_without_vnni, |k| k.name);
    let (k, warning) = choose("");
    assert_eq!((k.name, warning), (fastest, None));
    let (k, warning) = choose("portable");
    assert_eq!((k.name, warning), ("portable", None));
    let (k, warning) = choose("avx2");
    match avx2 {
        Some(_) => assert_eq!((k.name, warning), ("avx2", None)),
        None => {
            assert_eq!(k.name, "portable");
            let warning = warning.expect("a warning");
            assert!(warning.contains("lacks AVX2, FMA or F16C"), "{warning}");
        }
    }
    let (k, warning) = choose("avx512vnni");
    match vnni {
        Some(_) => assert_eq!((k.name, warning), ("avx512vnni", None)),
        None => {
            assert_eq!(k.name, best_without_vnni);
            let warning = warning.expect("a warning");
            assert!(warning.contains("lacks AVX-512 VNNI"), "{warning}");
        }
    }
    let (k, warning) = choose("avx9000");
    assert_eq!(k.name, fastest);
    let warning = warning.expect("a warning");
    assert!(
        warning.contains("avx9000 is not a kernel set (avx512vnni, avx2 or portable)"),
        "{warning}"
    );
    // Without AVX2 there is no VNNI set either: the portable kernels.
    let (k, warning) = Kernels::choose_from("", None, None);
    assert_eq!((k.name, warning), ("portable", None));
}

#[test]
fn q8_0_kernels_match_the_reference() {
    check_with_q8_0_acts(
        "q8_0",
        q8_0_blocks,
        dequantize_q8_0,
        dot_q8_0,
        |k| k.q8_0,
        |k| k.q8_0x4,
    );
}

#[test]
fn q5_0_kernels_match_the_reference() {
    check_with_q8_0_acts(
        "q5_0",
        q5_0_blocks,
        dequantize_q5_0,
        dot_q5_0,
        |k| k.q5_0,
        |k| k.q5_0x4,
    );
}

#[test]
fn q6k_kernels_match_the_reference() {
    check_with_q8k_acts("q6k", q6k_blocks, dequantize_q6k, dot_q6k, |k| k.q6k, |k| k.q6kx4);
}

/// The block layouts read as ggml lays them out: every format's values
/// as candle (a separate implementation of ggml's formats) expands the
/// same bytes.
#[test]
fn blocks_expand_as_candle_expands_them() {
    use candle_core::Device;
    use candle_core::quantized::ggml_file::qtensor_from_ggml;
    fn check<B: Pod>(ty: GgmlDType, blocks: &[B], ours: fn(&[B], &mut [f32]), values: usize) {
        let theirs = qtensor_from_ggml(
            ty,
            bytemuck::cast_slice(blocks),
            vec![blocks.len() * values],
            &Device::Cpu,
        )
        .and_then(|t| t.dequantize(&Device::Cpu))
        .and_then(|t| t.to_vec1::<f32>())
        .expect("candle expands the blocks");
        let mut mine = vec![0.0; blocks.len() * values];
        ours(blocks, &mut mine);
        for (i, (a, b)) in mine.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs(),
                "{ty:?} value {i}: {a} against candle's {b}"
            );
        }
    }
    let mut rng = Rng(5);
    for fill in FILLS {
        check(
            GgmlDType::Q4_0,
            &q4_0_blocks(&mut rng, 3, fill),
            dequantize_q4_0,
            QK,
        );
        check(
            GgmlDType::Q4_1,
            &q4_1_blocks(&mut rng, 3, fill),
            dequantize_q4_1,
            QK,
        );
        check(
            GgmlDType::Q5_0,
            &q5_0_blocks(&mut rng, 3, fill),
            dequantize_q5_0,
            QK,
        );
        check(
            GgmlDType::Q8_0,
            &q8_0_blocks(&mut rng, 3, fill),
            dequantize_q8_0,
            QK,
        );
        check(
            GgmlDType::Q4K,
            &q4k_blocks(&mut rng, 2, fill),
            dequantize_q4k,
            QK_K,
        );
        check(
            GgmlDType::Q6K,
            &q6k_blocks(&mut rng, 2, fill),
            dequantize_q6k,
            QK_K,
        );
    }
}

/// The Q8_K quantizer gives, byte for byte, what a running search for the
/// largest magnitude and a rounding of each value give: on random values,
/// zeros, the extremes, ties of magnitude with both signs, and signed
/// zeros.
#[test]
fn q8k_activations_are_the_plain_quantizer_s_bytes() {
    fn plain(xs: &[f32]) -> BlockQ8K {
        let mut b = BlockQ8K::zeroed();
        let max = xs
            .iter()
            .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        if max == 0.0 {
            return b;
        }
        let iscale = -128.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = ((iscale * v).round() as i32).min(127) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
        b
    }
    let mut rng = Rng(17);
    let mut rows: Vec<Vec<f32>> = FILLS.iter().map(|&f| activations(&mut rng, QK_K, f)).collect();
    let mut ties = rng.values(QK_K, 1.0);
    (ties[9], ties[200]) = (-7.5, 7.5);
    rows.push(ties.clone());
    (ties[9], ties[200]) = (7.5, -7.5);
    rows.push(ties.clone());
    let mut odd = rng.values(QK_K, 3.0);
    (odd[3], odd[100]) = (-0.0, 0.0);
    rows.push(odd);
    for xs in &rows {
        let mut got = [BlockQ8K::zeroed()];
        quantize_q8k(xs, &mut got);
        assert_eq!(
            bytemuck::bytes_of(&got[0]),
            bytemuck::bytes_of(&plain(xs)),
            "{xs:?}"
        );
    }
}

/// A K-quant format (Q8_K activations, whose sums of sixteen are checked
/// too): its kernels against the reference, and its four-row kernels
/// against its one-row ones.
fn check_with_q8k_acts<W: Pod>(
    name: &str,
    blocks: fn(&mut Rng, usize, Fill) -> Vec<W>,
    dequantize: fn(&[W], &mut [f32]),
    reference: Dot<W, BlockQ8K>,
    one: fn(&Kernels) -> Dot<W, BlockQ8K>,
    four: fn(&Kernels) -> Dot4<W, BlockQ8K>,
) {
    cases(|rng, wf, af, n| {
        let n = n.div_ceil(4); // super-blocks of 256: 1, 1, 1, 2, 5, 12
        let w = blocks(rng, n, wf);
        let mut a = vec![BlockQ8K::zeroed(); n];
        quantize_q8k(&activations(rng, n * QK_K, af), &mut a);
        let mut wx = vec![0.0; n * QK_K];
        dequantize(&w, &mut wx);
        let ax: Vec<f32> = a.iter().flat_map(|b| b.qs.map(|q| b.d * q as f32)).collect();
        for b in &a {
            for (j, s) in b.bsums.iter().enumerate() {
                assert_eq!(
                    *s as i32,
                    b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum::<i32>()
                );
            }
        }
        let want = reference(&w, &a);
        let mag = abs_dot(&wx, &ax);
        let what = format!("{name} {wf:?}/{af:?}/{n}");
        check_against_reference(want, dot_f32(&wx, &ax), mag, 10.0, &what, |k| one(k)(&w, &a));
        check_x4(rng, &w, &a, QK_K, one, four, quantize_q8k, name);
    });
}

#[test]
fn q4k_kernels_match_the_reference() {
    check_with_q8k_acts("q4k", q4k_blocks, dequantize_q4k, dot_q4k, |k| k.q4k, |k| k.q4kx4);
}

#[test]
fn f32_kernels_match_the_reference_at_every_length() {
    let mut rng = Rng(7);
    for n in [0, 1, 7, 8, 31, 32, 33, 64, 100, 576] {
        let (x, y) = (rng.values(n, 2.0), rng.values(n, 2.0));
        let want = dot_f32(&x, &y);
        for k in kernel_sets() {
            assert_close(
                (k.f32)(&x, &y),
                want,
                abs_dot(&x, &y),
                &format!("{} f32 {n}", k.name),
            );
        }
    }
}

#[test]
fn attention_kernels_match_the_reference() {
    let mut rng = Rng(9);
    for (hd, n, stride) in [
        (64, 1, 192),
        (64, 7, 192),
        (64, 200, 192),
        (32, 3, 32),
        (96, 5, 96),
        (128, 33, 256),
        (40, 4, 40),
    ] {
        let len = (n - 1) * stride + hd;
        let keys: Vec<f16> = (0..len).map(|_| rng.f16(2.0)).collect();
        let values: Vec<f16> = (0..len).map(|_| rng.f16(2.0)).collect();
        let q: Vec<f32> = rng
            .values(hd, 1.0)
            .iter()
            .map(|&v| f16::from_f32(v).to_f32())
            .collect();
        let scale = 1.0 / (hd as f32).sqrt();
        // Plain softmax attention in f32, for the meaning.
        let scores: Vec<f32> = (0..n)
            .map(|j| {
                let k: Vec<f32> = keys[j * stride..][..hd].iter().map(|v| v.to_f32()).collect();
                dot_f32(&k, &q) * scale
            })
            .collect();
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let total: f32 = scores.iter().map(|s| (s - max).exp()).sum();
        let exact: Vec<f32> = (0..hd)
            .map(|i| {
                (0..n)
                    .map(|j| (scores[j] - max).exp() / total * values[j * stride + i].to_f32())
                    .sum()
            })
            .collect();
        let mut want = vec![0.0; hd];
        attend(&q, &keys, &values, stride, n, scale, &mut vec![0.0; n], &mut want);
        for (a, b) in want.iter().zip(&exact) {
            // Probabilities rounded to f16: within a few thousandths.
            assert!((a - b).abs() < 1e-2, "reference attend hd {hd} n {n}: {a} vs {b}");
        }
        for k in kernel_sets() {
            let mut got = vec![7.0; hd];
            (k.attend)(&q, &keys, &values, stride, n, scale, &mut vec![0.0; n], &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{} attend hd {hd} n {n}: {a} vs {b}",
                    k.name
                );
            }
        }
    }
}

/// Query heads that share a key and value head, run together, get
/// exactly what each gets alone from the same kernel set (three heads of
/// 64 have their own AVX2 kernel; other shapes run head by head).
#[test]
fn shared_key_value_heads_give_each_head_its_own_result() {
    let mut rng = Rng(13);
    for (heads, hd, n, stride) in [
        (3, 64, 1, 192),
        (3, 64, 8, 192),
        (3, 64, 16, 192),
        (3, 64, 77, 192),
        (3, 64, 300, 576),
        (2, 64, 9, 128),
        (3, 32, 5, 96),
    ] {
        let len = (n - 1) * stride + hd;
        let keys: Vec<f16> = (0..len).map(|_| rng.f16(2.0)).collect();
        let values: Vec<f16> = (0..len).map(|_| rng.f16(1.0)).collect();
        let q: Vec<f32> = rng
            .values(heads * hd, 1.0)
            .iter()
            .map(|&x| f16::from_f32(x).to_f32())
            .collect();
        let scale = 1.0 / (hd as f32).sqrt();
        for k in kernel_sets() {
            let mut together = vec![7.0; heads * hd];
            let mut scores = vec![0.0; heads * n];
            (k.attend_shared)(
                &q,
                heads,
                &keys,
                &values,
                stride,
                n,
                scale,
                &mut scores,
                &mut together,
            );
            for h in 0..heads {
                let mut alone = vec![7.0; hd];
                (k.attend)(
                    &q[h * hd..][..hd],
                    &keys,
                    &values,
                    stride,
                    n,
                    scale,
                    &mut vec![0.0; n],
                    &mut alone,
                );
                assert_eq!(
                    &together[h * hd..][..hd],
                    &alone[..],
                    "{} heads {heads} hd {hd} n {n} head {h}",
                    k.name
                );
            }
        }
    }
}

/// The lane-wise largest magnitude is the plain running one, whatever the
/// length and wherever the largest value sits.
#[test]
fn largest_magnitude_matches_a_running_maximum() {
    let mut rng = Rng(19);
    for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 576] {
        for at in [0, n / 2, n.saturating_sub(1)] {
            let mut x = rng.values(n, 3.0);
            if n > 0 {
                x[at] = -9.5;
            }
            let want = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(amax(&x), want, "length {n}, largest at {at}");
        }
    }
}

/// The branch-free block rounding is C's `roundf` on every value,
/// including exact halves and the floats just below them.
#[test]
fn block_rounding_is_roundf_tie_for_tie() {
    let mut rng = Rng(17);
    let mut values: Vec<f32> = rng.values(4096, 130.0);
    for k in 0..128 {
        let half = k as f32 + 0.5;
        for v in [
            half,
            -half,
            half.next_down(),
            -half.next_down(),
            half.next_up(),
            k as f32,
            -(k as f32),
        ] {
            values.push(v);
        }
    }
    values.extend([0.0, -0.0, 0.499_999_97, -0.499_999_97]);
    values.resize(values.len().next_multiple_of(QK), 0.0);
    for block in values.chunks_exact(QK) {
        let got = round_block(block, 1.0);
        for (g, v) in got.iter().zip(block) {
            assert_eq!(*g, v.round() as i32, "{v}");
        }
    }
}

#[test]
fn quantizing_activations_keeps_values_within_half_a_step() {
    let mut rng = Rng(11);
    let x = rng.values(QK_K * 2, 5.0);
    let mut q8 = vec![BlockQ8_0::zeroed(); x.len() / QK];
    quantize_q8_0(&x, &mut q8);
    let mut back = vec![0.0; x.len()];
    dequantize_q8_0(&q8, &mut back);
    for (i, (a, b)) in x.iter().zip(&back).enumerate() {
        let step = q8[i / QK].d.to_f32();
        assert!((a - b).abs() <= step * 0.51 + 1e-3, "{a} vs {b} (step {step})");
    }
    let mut q8k = vec![BlockQ8K::zeroed(); x.len() / QK_K];
    quantize_q8k(&x, &mut q8k);
    for (i, a) in x.iter().enumerate() {
        let b = &q8k[i / QK_K];
        let q = b.qs[i % QK_K];
        let v = b.d * q as f32;
        // The largest magnitude maps to -128; the other sign saturates at
        // 127, up to one step short (as in llama.cpp).
        let steps = if q == 127 { 1.01 } else { 0.51 };
        assert!((a - v).abs() <= b.d.abs() * steps, "{a} vs {v}");
    }
}

#[test]
fn matmul_splits_rows_across_threads_and_matches_single_dots() {
    let mut rng = Rng(3);
    let (rows, cols, tokens) = (37, 64, 5);
    let blocks = q4_1_blocks(&mut rng, rows * cols / QK, Fill::Random);
    let mut data = Bytes::zeroed(blocks.len() * size_of::<BlockQ4_1>());
    data.as_bytes_mut().copy_from_slice(bytemuck::cast_slice(&blocks));
    let w = QMatrix::new(WeightType::Q4_1, rows, cols, data).unwrap();
    let x = rng.values(tokens * cols, 1.0);
    let k = Kernels::detect();
    let mut acts = Acts::default();
    acts.quantize(&k, ActType::Q8_1, &x, cols);
    for threads in [1, 2, 3] {
        let pool = Pool::new(threads);
        let mut out = vec![0.0; tokens * rows];
        // The same matrix twice in one step: the split crosses products.
        let mut out2 = vec![0.0; tokens * rows];
        matmul(
            &pool,
            &k,
            &mut [
                Product {
                    w: &w,
                    acts: &acts,
                    out: &mut out,
                },
                Product {
                    w: &w,
                    acts: &acts,
                    out: &mut out2,
                },
            ],
        );
        for t in 0..tokens {
            for r in 0..rows {
                let want = (k.q4_1)(w.row(r), acts.row(t));
                assert_eq!(out[t * rows + r], want, "threads {threads} token {t} row {r}");
                assert_eq!(out2[t * rows + r], want);
            }
        }
    }
}

/// Two products with a step after each share of rows give what two
/// products and the step over the whole output give, bit for bit, with
/// interleaved and plain weights and on every thread count (the rows of
/// two groups of eight and one over, so a share ends off the chunk grid).
#[test]
fn a_pair_of_products_then_a_step_equals_the_products_then_the_step() {
    let mut rng = Rng(9);
    let (rows, cols, tokens) = (136, 64, 11);
    let matrix = |rng: &mut Rng, ty| {
        let blocks = q4_1_blocks(rng, rows * cols / QK, Fill::Random);
        let mut data = Bytes::zeroed(blocks.len() * size_of::<BlockQ4_1>());
        data.as_bytes_mut().copy_from_slice(bytemuck::cast_slice(&blocks));
        let m = QMatrix::new(WeightType::Q4_1, rows, cols, data).unwrap();
        if ty == WeightType::Q4_1x8 {
            m.interleaved()
        } else {
            m
        }
    };
    let x = rng.values(tokens * cols, 1.0);
    fn product<'a>(w: &'a QMatrix, acts: &'a Acts, out: &'a mut [f32]) -> Product<'a> {
        Product { w, acts, out }
    }
    let step = |a: &mut [f32], b: &[f32]| {
        for (a, b) in a.iter_mut().zip(b) {
            *a = *a * 0.5 - b;
        }
    };
    for ty in [WeightType::Q4_1, WeightType::Q4_1x8] {
        let (wa, wb) = (matrix(&mut rng, ty), matrix(&mut rng, ty));
        assert_eq!(wa.ty, ty);
        for k in kernel_sets() {
            let mut acts = Acts::default();
            acts.quantize(&k, ActType::Q8_1, &x, cols);
            for threads in [1, 2, 3] {
                let pool = Pool::new(threads);
                let (mut want_a, mut want_b) = (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
                matmul(
                    &pool,
                    &k,
                    &mut [product(&wa, &acts, &mut want_a), product(&wb, &acts, &mut want_b)],
                );
                step(&mut want_a, &want_b);
                let (mut a, mut b) = (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
                matmul_pair_then(
                    &pool,
                    &k,
                    product(&wa, &acts, &mut a),
                    product(&wb, &acts, &mut b),
                    &step,
                );
                assert_eq!(a, want_a, "{ty:?} {} threads {threads}", k.name);
                assert_eq!(b, want_b, "{ty:?} {} threads {threads}", k.name);
            }
        }
    }
}

/// A matrix interleaved at load (Q4_1, Q8_0, Q5_0, Q4_K, Q6_K) gives the
/// same products (to rounding) and the same rows as the matrix it came
/// from, on every thread count; matrices it cannot interleave stay as they
/// are.
#[test]
fn an_interleaved_matrix_computes_what_the_plain_one_does() {
    let mut rng = Rng(5);
    // Seven groups of eight rows: chunks of sixteen rows leave one over.
    let (rows, cols) = (56, 96);
    let q4_1 = q4_1_blocks(&mut rng, rows * cols / QK, Fill::Random);
    let q8_0 = q8_0_blocks(&mut rng, rows * cols / QK, Fill::Random);
    let q5_0 = q5_0_blocks(&mut rng, rows * cols / QK, Fill::Random);
    let matrix = |ty, cols, bytes: &[u8]| {
        let mut data = Bytes::zeroed(bytes.len());
        data.as_bytes_mut().copy_from_slice(bytes);
        QMatrix::new(ty, rows, cols, data).unwrap()
    };
    let q4_1 = matrix(WeightType::Q4_1, cols, bytemuck::cast_slice(&q4_1));
    let q8_0 = matrix(WeightType::Q8_0, cols, bytemuck::cast_slice(&q8_0));
    let q5_0 = matrix(WeightType::Q5_0, cols, bytemuck::cast_slice(&q5_0));
    for (plain, ty) in [
        (q4_1, WeightType::Q4_1x8),
        (q8_0, WeightType::Q8_0x8),
        (q5_0, WeightType::Q5_0x8),
    ] {
        check_interleaved(&mut rng, &plain, ty);
    }
    // The K-quants: rows of two super-blocks.
    let cols = 2 * QK_K;
    let q4k = q4k_blocks(&mut rng, rows * cols / QK_K, Fill::Random);
    let q6k = q6k_blocks(&mut rng, rows * cols / QK_K, Fill::Random);
    let q4k = matrix(WeightType::Q4K, cols, bytemuck::cast_slice(&q4k));
    let q6k = matrix(WeightType::Q6K, cols, bytemuck::cast_slice(&q6k));
    for (plain, ty) in [(q4k, WeightType::Q4Kx8), (q6k, WeightType::Q6Kx8)] {
        check_interleaved(&mut rng, &plain, ty);
    }
    let odd = QMatrix::new(WeightType::Q4_1, 3, 32, Bytes::zeroed(60)).unwrap();
    assert_eq!(odd.interleaved().ty, WeightType::Q4_1);
    let err = QMatrix::new(WeightType::Q4_1x8, 12, 32, Bytes::zeroed(240)).unwrap_err();
    assert!(err.contains("not whole groups of 8"), "{err}");
}

fn check_interleaved(rng: &mut Rng, plain: &QMatrix, ty: WeightType) {
    // Eleven activation rows: a pass of eight, then one of three.
    let (rows, cols, tokens) = (plain.rows, plain.cols, 11);
    let x8 = plain.clone().interleaved();
    assert_eq!(x8.ty, ty);
    let (mut a, mut b) = (vec![0.0; cols], vec![0.0; cols]);
    for r in 0..rows {
        plain.dequantize_row(r, &mut a);
        x8.dequantize_row(r, &mut b);
        assert_eq!(a, b, "row {r}");
    }
    let x = rng.values(tokens * cols, 1.0);
    // The same values quantized for each (interleaved Q8_0 takes sums too).
    let (mut plain_acts, mut acts) = (Acts::default(), Acts::default());
    plain_acts.quantize(&Kernels::PORTABLE, plain.ty.act(), &x, cols);
    acts.quantize(&Kernels::PORTABLE, ty.act(), &x, cols);
    for k in kernel_sets() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            let (mut want, mut got) = (vec![0.0; tokens * rows], vec![0.0; tokens * rows]);
            let mut again = vec![0.0; tokens * rows];
            matmul(
                &pool,
                &k,
                &mut [Product {
                    w: plain,
                    acts: &plain_acts,
                    out: &mut want,
                }],
            );
            // Twice in one step: the second product's groups start off the
            // chunks' sixteen-row grid.
            matmul(
                &pool,
                &k,
                &mut [
                    Product {
                        w: &x8,
                        acts: &acts,
                        out: &mut got,
                    },
                    Product {
                        w: &x8,
                        acts: &acts,
                        out: &mut again,
                    },
                ],
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let what = format!("{ty:?} {} threads {threads} output {i}", k.name);
                assert_close(*g, *w, 10.0, &what);
            }
            assert_eq!(got, again, "{ty:?} {} threads {threads}", k.name);
        }
    }
}

#[test]
fn a_row_that_is_not_whole_blocks_is_refused() {
    let err = QMatrix::new(WeightType::Q4_1, 2, 40, Bytes::zeroed(100)).unwrap_err();
    assert!(err.contains("not whole blocks"), "{err}");
    let err = QMatrix::new(WeightType::Q8_0, 2, 32, Bytes::zeroed(10)).unwrap_err();
    assert!(err.contains("expected 68"), "{err}");
}

/// The SIMD-friendly exponential of the attention softmax gives libm's
/// `expf` bit for bit but for rare last-bit cases (where `expf` itself is
/// not correctly rounded: about one in 10,000), across the range scores
/// take (at most 0 after the largest is taken off) and beyond, subnormal
/// results included.
#[test]
fn the_softmax_exponential_is_expf_to_the_last_bit() {
    let (mut total, mut differ) = (0usize, 0usize);
    let mut check = |x: f32| {
        let (got, want) = (exp_f32(x), x.exp());
        total += 1;
        if got.to_bits() != want.to_bits() {
            differ += 1;
            assert!(
                got.to_bits().abs_diff(want.to_bits()) <= 1,
                "exp({x:e}): {got:e} against expf's {want:e}"
            );
        }
    };
    // Every f32 from -110 to 0 whose low ten mantissa bits are zero (a
    // million values, tiny ones too), and a spread of positive ones.
    let mut bits = (-110.0f32).to_bits();
    while f32::from_bits(bits) < 0.0 {
        check(f32::from_bits(bits));
        bits -= 1024;
    }
    for i in 0..=100_000 {
        check(i as f32 * 8.8e-4);
    }
    assert!(differ * 2_000 <= total, "{differ} of {total} differ from expf");
    assert_eq!(exp_f32(0.0), 1.0);
    assert_eq!(exp_f32(-200.0), 0.0);
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_f32(100.0), f32::INFINITY);
    assert!(exp_f32(f32::NAN).is_nan());
    eprintln!("{differ} of {total} differ from expf in the last bit");
}

/// Every set's Q8_1 quantizer (eight blocks at a time with AVX2, sixteen
/// with AVX-512) gives the plain code's bytes: random blocks, zeros, large
/// values, values that land exactly on a half (ties round away from zero),
/// one large value among small ones, and subnormal values (whose inverse
/// scale is not finite). The blocks go in both orders, so that each kind
/// passes through a group and through the blocks left over.
#[test]
fn every_q8_1_quantizer_gives_the_plain_bytes() {
    let mut rng = Rng(29);
    let mut blocks: Vec<Vec<f32>> = vec![vec![0.0; QK], vec![1000.0; QK], vec![-3.0e30; QK]];
    for _ in 0..200 {
        blocks.push(rng.values(QK, 3.0));
    }
    // The largest maps to 127: ties at k + 0.5 for a scale of exactly one.
    blocks.push(
        (0..QK)
            .map(|i| if i == 0 { 127.0 } else { (i as f32 - 16.0) + 0.5 })
            .collect(),
    );
    blocks.push(
        (0..QK)
            .map(|i| if i == 5 { -90.0 } else { rng.values(1, 0.01)[0] })
            .collect(),
    );
    blocks.push((0..QK).map(|i| f32::from_bits(1 + i as u32 * 3)).collect());
    blocks.push(
        (0..QK)
            .map(|i| if i % 2 == 0 { f32::MIN_POSITIVE } else { -1e-39 })
            .collect(),
    );
    assert!(!blocks.len().is_multiple_of(16), "some blocks left over");
    let forwards = blocks.concat();
    blocks.reverse();
    for x in [forwards, blocks.concat()] {
        let n = x.len() / QK;
        let mut want = vec![BlockQ8_1::zeroed(); n];
        quantize_q8_1(&x, &mut want);
        for k in kernel_sets() {
            let mut got = vec![BlockQ8_1::zeroed(); n];
            (k.quantize_q8_1)(&x, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    bytemuck::bytes_of(g),
                    bytemuck::bytes_of(w),
                    "{} block {i}: {:?}",
                    k.name,
                    &x[i * QK..][..QK]
                );
            }
        }
    }
}

/// Activations written through a writer, rows from two threads, are the
/// bytes [`Acts::quantize`] gives, in every format; a row of the wrong
/// length is refused.
#[test]
fn activations_written_by_rows_equal_quantized_ones() {
    let mut rng = Rng(41);
    let (rows, cols) = (5, 2 * QK_K);
    let x = rng.values(rows * cols, 2.0);
    let k = Kernels::detect();
    let pool = Pool::new(2);
    for ty in [
        ActType::Q8_0,
        ActType::Q8_0S,
        ActType::Q8_1,
        ActType::Q8K,
        ActType::F32,
    ] {
        let mut want = Acts::default();
        want.quantize(&k, ty, &x, cols);
        let mut got = Acts::default();
        let w = got.writer(ty, rows, cols);
        pool.run(&|t| {
            // Thread t writes rows t, t + 2, ...
            for r in (t..rows).step_by(2) {
                // SAFETY: each row belongs to one thread.
                unsafe { w.write(&k, r, &x[r * cols..][..cols]) };
            }
        });
        assert_eq!(got.data.as_bytes(), want.data.as_bytes(), "{ty:?}");
    }
    let mut acts = Acts::default();
    let w = acts.writer(ActType::Q8_1, rows, cols);
    let err = std::panic::catch_unwind(|| unsafe { w.write(&k, 0, &x[..QK]) }).unwrap_err();
    let message = err.downcast_ref::<String>().unwrap();
    assert!(message.contains("a row of 512 values"), "{message}");
}

/// Every set's SwiGLU and exponential lane sums give the plain code's
/// values bit for bit (NaN for NaN): random values over the exponential's
/// whole range, its clamps, zeros of both signs, subnormals, infinities
/// and NaN, at lengths that leave a vector part-filled.
#[test]
fn every_set_s_swiglu_and_exponential_sums_give_the_plain_values() {
    let mut rng = Rng(53);
    let mut special = vec![
        0.0,
        -0.0,
        1e-40,
        -1e-40,
        86.9,
        -86.9,
        88.5,
        -88.5,
        1000.0,
        -1000.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    special.extend(rng.values(307, 60.0));
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    for k in kernel_sets() {
        for len in [0, 1, 15, 16, 17, 40, 320] {
            let (g, u) = (&special[..len], &rng.values(len, 2.0));
            let (mut want, mut got) = (g.to_vec(), g.to_vec());
            swiglu(&mut want, u);
            (k.swiglu)(&mut got, u);
            for (i, (&w, &o)) in want.iter().zip(&got).enumerate() {
                assert!(same(w, o), "{} swiglu({}) at {i}: {o} for {w}", k.name, g[i]);
            }
        }
        for len in [0, 8, 16, 24, 320] {
            let v = &special[special.len() - len..];
            for max in [0.0, 30.0, -5.0] {
                let (want, got) = (exp_lanes(v, max), (k.exp_lanes)(v, max));
                for (l, (&w, &o)) in want.iter().zip(&got).enumerate() {
                    assert!(same(w, o), "{} exp_lanes of {len} lane {l}: {o} for {w}", k.name);
                }
            }
        }
    }
}

/// A large buffer starts on a 2 MB boundary (where huge pages can back
/// it), comes zeroed, keeps what is written, and clones whole; a small one
/// is an ordinary buffer.
#[test]
fn large_buffers_start_on_a_huge_page() {
    let len = HUGE_PAGES_FROM + 12_345;
    let mut big = Bytes::zeroed(len);
    assert_eq!(big.as_bytes().len(), len);
    assert_eq!(big.as_bytes().as_ptr() as usize % HUGE_PAGE, 0);
    assert!(big.as_bytes().iter().all(|&b| b == 0));
    big.as_bytes_mut()[len - 1] = 7;
    big.as_bytes_mut()[0] = 3;
    let copy = big.clone();
    assert_eq!(copy.as_bytes(), big.as_bytes());
    let small = Bytes::zeroed(1000);
    assert_eq!(small.as_bytes(), &[0u8; 1000][..]);
}

/// The AVX-512 softmax (exponentials in f64 vectors) gives the shared
/// code's probabilities bit for bit: random scores, scores far below the
/// largest (whose exponentials are 0 or subnormal), masked ones (`-inf`),
/// and lengths that leave a vector part-filled.
#[test]
fn the_vector_softmax_gives_the_plain_probabilities() {
    if Kernels::avx512vnni().is_none() {
        eprintln!("no AVX-512 VNNI here: the Bochs run covers this test");
        return;
    }
    let mut rng = Rng(61);
    for len in [0, 1, 7, 8, 9, 16, 33, 300] {
        let mut scores = rng.values(len, 20.0);
        for (i, s) in scores.iter_mut().enumerate() {
            match i % 11 {
                3 => *s = -1000.0,
                5 => *s -= 95.0,
                7 => *s = f32::NEG_INFINITY,
                _ => {}
            }
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let (mut want, mut got) = (scores.clone(), scores.clone());
        softmax_f16(&mut want, max);
        // SAFETY: the CPU has AVX-512 VNNI (checked above).
        unsafe { vnni::softmax_f16(&mut got, max) };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "length {len}: {scores:?}");
    }
    // The exponentials themselves, before the f16 rounding hides a last
    // bit: every lane is `exp_f32`'s value, over its whole range and past
    // both clamps.
    let mut x: Vec<f32> = (0..200_000).map(|i| -160.0 + i as f32 * 0.00128).collect();
    x.extend([f32::NEG_INFINITY, f32::INFINITY, f32::NAN, -0.0, 0.0, 1e-30]);
    x.resize(x.len().next_multiple_of(8), 0.5);
    for c in x.chunks_exact(8) {
        // SAFETY: as above; `c` is eight f32.
        let got = unsafe {
            let mut out = [0.0f32; 8];
            std::arch::x86_64::_mm256_storeu_ps(
                out.as_mut_ptr(),
                vnni::exp_f32x8(std::arch::x86_64::_mm256_loadu_ps(c.as_ptr())),
            );
            out
        };
        for (&v, &g) in c.iter().zip(&got) {
            let w = exp_f32(v);
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "exp({v}): {g} for {w}"
            );
        }
    }
}
