//! `linear` (every build this CPU runs: AMX, AVX512-BF16, AVX-512, AVX2,
//! portable)
//! against a naive f64 reference, for
//! decode- and prefill-shaped products, every dtype pair, with and without
//! bias; and the errors it reports for bad inputs.
//!
//! Tolerance: both sides see the same dtype-rounded inputs, so the only
//! differences are f32 accumulation and the final rounding to `x`'s dtype.
//! For random-sign terms the accumulation error grows like
//! `sqrt(k) · eps · max|x| · max|w|`; we allow `1e-5 · sqrt(k) · max|x| ·
//! max|w|` (about 80 f32 ulps of that scale), plus the output dtype's
//! relative rounding (2^-8 for bf16, 2^-11 for f16) of the exact value.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_kernels::{linear, linear_on, linear_weight_on, Isa, KernelError, LinearWeight};

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

fn tensor(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
    t.to_dtype(dtype).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    let t = t.to_dtype(DType::F32).unwrap();
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |a, &b| a.max(b.abs() as f64))
}

fn rounding(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 2f64.powi(-8),
        DType::F16 => 2f64.powi(-11),
        _ => 0.0,
    }
}

/// Checks every build on one random product against the reference,
/// through [`linear_on`] and through a [`LinearWeight`], whose packed copy
/// may send a product to another kernel (f32 from 9 rows runs packed, not
/// on the dot block). The `LinearWeight` runs twice (packing its copy where
/// it was not yet made, then reading it) and must agree with itself bit
/// for bit, and with `linear_on` wherever both take the same kernel.
fn check(m: usize, k: usize, n: usize, xd: DType, wd: DType, bias: Option<DType>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = tensor(&mut rng, &[m, k], xd);
    let w = tensor(&mut rng, &[n, k], wd);
    let b = bias.map(|d| tensor(&mut rng, &[n], d));
    let (xv, wv) = (values(&x), values(&w));
    let bv = b.as_ref().map(values);
    let scale = (k as f64).sqrt() * max_abs(&xv) * max_abs(&wv);
    let mut want = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|e| xv[i * k + e] as f64 * wv[j * k + e] as f64)
                .sum();
            want[i * n + j] = dot + bv.as_ref().map_or(0.0, |b| b[j] as f64);
        }
    }
    let kept = LinearWeight::new(w.clone());
    for isa in Isa::available() {
        let build = isa.name();
        let case = format!("{build} m={m} k={k} n={n} x={xd:?} w={wd:?} bias={bias:?}");
        let y = linear_on(isa, &x, &w, b.as_ref()).unwrap();
        assert_eq!((y.dims(), y.dtype()), (&[m, n][..], xd), "{case}");
        let kept_y = linear_weight_on(isa, &x, &kept, b.as_ref()).unwrap();
        let again = linear_weight_on(isa, &x, &kept, b.as_ref()).unwrap();
        assert_eq!(
            values(&again),
            values(&kept_y),
            "{case}, LinearWeight twice"
        );
        // Only f32 weights change kernels when packed ahead.
        if wd != DType::F32 || m <= 8 {
            assert_eq!(values(&kept_y), values(&y), "{case}, LinearWeight");
        }
        for (path, y) in [("linear_on", &y), ("LinearWeight", &kept_y)] {
            for (idx, (&got, &want)) in values(y).iter().zip(&want).enumerate() {
                let tol = 1e-5 * scale + rounding(xd) * want.abs();
                let err = (got as f64 - want).abs();
                assert!(
                    err <= tol,
                    "{case} {path} at {idx}: got {got}, want {want}, tol {tol}"
                );
            }
        }
    }
}

/// Every (m, k, n) of the grid, each with one dtype pair in rotation and
/// bias on every other shape, so every pair meets every kind of shape.
#[test]
fn matches_reference_on_the_shape_grid() {
    let mut case = 0usize;
    for m in [1, 2, 3, 5, 16, 33, 100] {
        for k in [8, 17, 64, 896, 1000] {
            for n in [1, 7, 64, 300] {
                let (xd, wd) = (DTYPES[case % 3], DTYPES[case / 3 % 3]);
                let bias = (case % 2 == 1).then_some(DTYPES[case / 2 % 3]);
                check(m, k, n, xd, wd, bias, case as u64);
                case += 1;
            }
        }
    }
}

/// Every dtype pair and bias dtype on a decode and a prefill shape.
#[test]
fn every_dtype_combination_matches_reference() {
    let mut seed = 1000;
    for xd in DTYPES {
        for wd in DTYPES {
            for bias in [None, Some(DType::F32), Some(DType::BF16), Some(DType::F16)] {
                for (m, k, n) in [(2, 17, 9), (37, 100, 30)] {
                    check(m, k, n, xd, wd, bias, seed);
                    seed += 1;
                }
            }
        }
    }
}

/// Every register-block shape of each regime: 1..=12 rows cover the
/// streaming groups of 1..=8 rows and the 4 × 3 block's row remainders (the
/// switch depends on the weight width), 600 rows give several prefill row
/// tiles; k = 75 leaves both an 8-lane and a scalar tail.
#[test]
fn every_block_shape_matches_reference() {
    for (i, m) in (1..=12).chain([600]).enumerate() {
        for (j, wd) in DTYPES.into_iter().enumerate() {
            let bias = (j == 1).then_some(DType::F32);
            check(
                m,
                75,
                29,
                DType::F32,
                wd,
                bias,
                500 + 3 * i as u64 + j as u64,
            );
        }
    }
}

/// The prefill register blocks' edges: every row remainder of the 6-row
/// (AVX2, portable) and 12-row (AVX-512) blocks, and columns around one
/// and two 16-wide panels, so partial blocks, a lone last panel in a
/// two-panel block, and full blocks all meet the reference.
#[test]
fn prefill_register_block_edges_match_reference() {
    let mut seed = 9000;
    for m in 33..=45 {
        for n in [15, 16, 17, 31, 32, 33, 48, 49] {
            let wd = [DType::F32, DType::BF16][seed as usize % 2];
            check(m, 37, n, DType::F32, wd, None, seed);
            seed += 1;
        }
    }
}

/// The `vdpbf16ps` kernel's edges (bf16 × bf16, `k` even, on the AVX512-BF16
/// and AMX builds; AMX takes only whole 32-wide k steps, so these k are
/// not): from the 9 rows where it takes over, every row remainder of the
/// 6-row block, columns around one, two and four 16-wide panels (a block
/// is four), k of one pair, with a pair tail past the 16-pair steps and the
/// 8-pair pack, and over several k blocks; odd k (widened instead).
#[test]
fn bf16_pair_block_edges_match_reference() {
    let mut seed: u64 = 30_000;
    for m in 9..=45 {
        for (n, k) in [
            (15, 2),
            (16, 38),
            (17, 902),
            (33, 70),
            (49, 37),
            (64, 94),
            (65, 30),
        ] {
            let bias = seed.is_multiple_of(3).then_some(DType::BF16);
            check(m, k, n, DType::BF16, DType::BF16, bias, seed);
            seed += 1;
        }
    }
}

/// Leading dims are kept, strided `x` is accepted, `k = 0` gives the bias,
/// empty `m` or `n` gives an empty result.
#[test]
fn shapes_at_the_edges() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = tensor(&mut rng, &[2, 3, 40], DType::F32);
    let w = tensor(&mut rng, &[5, 40], DType::BF16);
    let y = linear(&x, &w, None).unwrap();
    assert_eq!(y.dims(), &[2, 3, 5]);
    let flat = linear(&x.reshape((6, 40)).unwrap(), &w, None).unwrap();
    assert_eq!(values(&y), values(&flat));

    let xt = tensor(&mut rng, &[40, 4], DType::F32).t().unwrap();
    let want = linear(&xt.contiguous().unwrap(), &w, None).unwrap();
    assert_eq!(values(&linear(&xt, &w, None).unwrap()), values(&want));

    let b = tensor(&mut rng, &[5], DType::F16);
    let x0 = Tensor::zeros((3, 0), DType::F32, &Device::Cpu).unwrap();
    let w0 = Tensor::zeros((5, 0), DType::F32, &Device::Cpu).unwrap();
    let y0 = linear(&x0, &w0, Some(&b)).unwrap();
    assert_eq!(values(&y0), values(&b).repeat(3));
    let empty = linear(&x.narrow(1, 0, 0).unwrap(), &w, None).unwrap();
    assert_eq!(empty.dims(), &[2, 0, 5]);
}

/// candle keeps wrapped errors as `dyn Display`, so the typed error is
/// checked through its message.
fn assert_refused(r: candle_core::Result<Tensor>, want: KernelError) {
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains(&want.to_string()), "got: {msg}\nwant: {want}");
}

#[test]
fn bad_inputs_are_refused_with_clear_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = tensor(&mut rng, &[4, 16], DType::F32);
    let w = tensor(&mut rng, &[8, 16], DType::F32);
    let b = tensor(&mut rng, &[8], DType::F32);
    let op = "linear";
    let shape = |what, expected: &str, got: &[usize]| KernelError::ShapeMismatch {
        op,
        what,
        expected: expected.into(),
        got: got.to_vec(),
    };
    let wide = tensor(&mut rng, &[4, 17], DType::F32);
    let e = shape("x", "[m, 16] (k from w)", &[4, 17]);
    assert_refused(linear(&wide, &w, None), e);
    let e = shape("w", "[n, k]", &[8, 16, 1]);
    assert_refused(linear(&x, &w.unsqueeze(2).unwrap(), None), e);
    let e = shape("bias", "[8] (n from w)", &[1, 8]);
    assert_refused(linear(&x, &w, Some(&b.unsqueeze(0).unwrap())), e);
    let scalar = Tensor::new(1.0f32, &Device::Cpu).unwrap();
    assert_refused(linear(&scalar, &w, None), shape("x", "[m, 16]", &[]));

    let e = KernelError::UnsupportedOperandDtype {
        op,
        what: "w",
        dtype: DType::F64,
    };
    assert_refused(linear(&x, &w.to_dtype(DType::F64).unwrap(), None), e);
    let e = KernelError::UnsupportedOperandDtype {
        op,
        what: "x",
        dtype: DType::U8,
    };
    assert_refused(linear(&x.to_dtype(DType::U8).unwrap(), &w, None), e);

    let wt = tensor(&mut rng, &[16, 8], DType::F32).t().unwrap();
    let e = KernelError::BadStrides {
        op,
        what: "w",
        requirement: "contiguous (the kernel never copies weights)",
    };
    assert_refused(linear(&x, &wt, None), e);
}

/// The AMX register block's edges (bf16 × bf16, `k` whole 32-wide tile
/// steps) from the 16 rows where tiles take over: every row remainder of
/// the 32-row block, columns around one and two 16-wide tiles, and k over
/// one 448-wide k block, with and without bias. On CPUs without AMX the
/// other builds run the same cases.
#[test]
fn amx_block_edges_match_reference() {
    println!("builds: {:?}", Isa::available());
    let mut seed: u64 = 20_000;
    for m in 16..=66 {
        for (n, k) in [
            (15, 32),
            (16, 64),
            (17, 480),
            (31, 96),
            (32, 32),
            (33, 64),
            (65, 480),
        ] {
            let bias = seed.is_multiple_of(2).then_some(DType::BF16);
            check(m, k, n, DType::BF16, DType::BF16, bias, seed);
            seed += 1;
        }
    }
}

/// A [`LinearWeight`] packs its copy when asked to, and only where the
/// CPU's build reads one: bf16 weights on the AVX512-BF16 build (AMX takes
/// k = 96 in whole tile steps, from its own packing), f32 weights on the
/// AVX-512 builds; f16 weights never.
#[test]
fn linear_weight_packs_only_for_the_kernels_that_read_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let (k, n) = (96usize, 40usize);
    // 3 panels of 16 columns × 96 k, plus alignment.
    let panels = |bytes: usize| n.div_ceil(16) * 16 * k * bytes;
    let build = Isa::detect();
    let avx512 = matches!(build, Isa::Amx | Isa::Avx512Bf16 | Isa::Avx512);
    for (dtype, packs) in [
        (DType::BF16, build == Isa::Avx512Bf16),
        (DType::F32, avx512),
        (DType::F16, false),
    ] {
        let w = LinearWeight::new(tensor(&mut rng, &[n, k], dtype));
        assert_eq!(w.packed_bytes(), 0, "{dtype:?} packed before asked");
        w.pack_ahead();
        let x = tensor(&mut rng, &[32, k], dtype);
        w.forward(&x, None).unwrap();
        match packs {
            true => {
                let want = panels(dtype.size_in_bytes());
                assert!((want..want + 128).contains(&w.packed_bytes()), "{dtype:?}");
            }
            false => {
                println!("{}: {dtype:?} weights are not packed ahead", build.name());
                assert_eq!(w.packed_bytes(), 0, "{dtype:?}");
            }
        }
    }
}
