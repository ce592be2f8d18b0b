//! `tandem-bench roof`: the machine's compute roof beside the prefill
//! GEMMs, in one run. The roof is measured, not looked up: register-only
//! FMA loops (no loads, independent accumulator chains) on one thread and
//! on every thread, for f32 in 8 and 16 lanes and for bf16 pairs with
//! `vdpbf16ps`. The GEMMs are Qwen2.5-0.5B's projections at prefill row
//! counts, through tandem's `linear` on every kernel build this CPU runs
//! and through candle's CPU matmul (the `gemm` crate), each as GFLOP/s and
//! as a fraction of the f32 roof.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tandem_kernels::{linear_on, Isa};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Activation rows (prompt tokens in one step) to measure.
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    m: Vec<usize>,
    /// Timed runs per product; the best is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Weight dtypes to measure (activations f32; with bf16 weights also
    /// bf16 activations, the bf16 compute path).
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16")]
    weights: Vec<String>,
    #[arg(long, default_value = "roof-bench.json")]
    out: std::path::PathBuf,
}

/// Qwen2.5-0.5B's prefill products as (name, k, n): `y[m, n] = x[m, k] ·
/// w[n, k]ᵀ`.
const SHAPES: [(&str, usize, usize); 4] = [
    ("qkv", 896, 1152),
    ("o_proj", 896, 896),
    ("gate_up", 896, 9728),
    ("down", 4864, 896),
];

#[derive(Serialize)]
struct Peak {
    kind: &'static str,
    one_thread_gflops: f64,
    all_threads_gflops: f64,
}

#[derive(Serialize)]
struct GemmRow {
    shape: &'static str,
    m: usize,
    k: usize,
    n: usize,
    weights: String,
    kernel: String,
    gflops: f64,
    fraction_of_f32_peak: f64,
}

#[derive(Serialize)]
struct Report {
    threads: usize,
    peaks: Vec<Peak>,
    gemms: Vec<GemmRow>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    let peaks = measure_peaks();
    for p in &peaks {
        eprintln!(
            "peak {:<28} {:>8.1} GFLOP/s on 1 thread, {:>8.1} on {threads}",
            p.kind, p.one_thread_gflops, p.all_threads_gflops
        );
    }
    let roof = peaks
        .iter()
        .filter(|p| p.kind.starts_with("f32"))
        .map(|p| p.all_threads_gflops)
        .fold(0.0, f64::max);
    let mut gemms = Vec::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for wname in &args.weights {
        let wdtype = tandem_engine::parse_dtype(wname)?;
        for &m in &args.m {
            for (shape, k, n) in SHAPES {
                let x = random(&mut rng, &[m, k], DType::F32)?;
                let w = random(&mut rng, &[n, k], wdtype)?;
                let flops = 2.0 * (m * k * n) as f64;
                let mut kernels = tandem_builds(&x, &w, "");
                // bf16 compute (`--dtype bf16`): bf16 activations too, the
                // products AMX takes.
                if wdtype == DType::BF16 {
                    kernels.extend(tandem_builds(&x.to_dtype(DType::BF16)?, &w, ", x bf16"));
                }
                let (xc, wt) = (x.clone(), w.to_dtype(DType::F32)?.t()?);
                kernels.push(Kernel {
                    name: "candle matmul (gemm crate)".into(),
                    run: Box::new(move || xc.matmul(&wt)),
                });
                for Kernel { name: kernel, run } in kernels {
                    let secs = best_of(args.repeats, || run().map(|_| ()))?;
                    let gflops = flops / secs / 1e9;
                    eprintln!(
                        "{shape:<8} m={m:<5} k={k:<5} n={n:<5} w={wname:<5} {kernel:<28} {gflops:>7.1} GFLOP/s ({:>3.0} % of f32 peak)",
                        100.0 * gflops / roof
                    );
                    gemms.push(GemmRow {
                        shape,
                        m,
                        k,
                        n,
                        weights: wname.clone(),
                        kernel,
                        gflops,
                        fraction_of_f32_peak: gflops / roof,
                    });
                }
            }
        }
    }
    let report = Report {
        threads,
        peaks,
        gemms,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn random(rng: &mut impl Rng, shape: &[usize], dtype: DType) -> anyhow::Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?)
}

/// Seconds of the fastest of `repeats` runs, after one warm-up.
fn best_of(repeats: usize, f: impl Fn() -> candle_core::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut best = f64::MAX;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// `linear` on every kernel build this CPU runs, named `tandem <build><suffix>`.
fn tandem_builds(x: &Tensor, w: &Tensor, suffix: &str) -> Vec<Kernel> {
    Isa::available()
        .into_iter()
        .map(|isa| {
            let (x, w) = (x.clone(), w.clone());
            Kernel {
                name: format!("tandem {}{suffix}", isa.name()),
                run: Box::new(move || linear_on(isa, &x, &w, None)),
            }
        })
        .collect()
}

/// One GEMM implementation under test.
struct Kernel {
    name: String,
    run: Box<dyn Fn() -> candle_core::Result<Tensor>>,
}

/// One register-only loop: FLOPs it did and how long it took.
type PeakLoop = fn(u64) -> f64;

fn measure_peaks() -> Vec<Peak> {
    let mut loops: Vec<(&'static str, PeakLoop)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            loops.push(("f32 FMA, 8 lanes (AVX2)", fma::avx2));
        }
        if is_x86_feature_detected!("avx512f") {
            loops.push(("f32 FMA, 16 lanes (AVX-512)", fma::avx512));
        }
        if is_x86_feature_detected!("avx512bf16") {
            loops.push(("bf16 dot, 32 pairs (vdpbf16ps)", fma::avx512_bf16));
        }
    }
    if tandem_kernels::amx_peak_loop(1).is_some() {
        loops.push(("bf16 tiles (AMX tdpbf16ps)", |iters| {
            tandem_kernels::amx_peak_loop(iters / 8).unwrap_or(0.0)
        }));
    }
    const ITERS: u64 = 20_000_000;
    loops
        .into_iter()
        .map(|(kind, f)| {
            let rate = |f: PeakLoop| {
                let t = Instant::now();
                let flops = f(ITERS);
                flops / t.elapsed().as_secs_f64() / 1e9
            };
            let one = (0..3).map(|_| rate(f)).fold(0.0, f64::max);
            let all = (0..3)
                .map(|_| {
                    let t = Instant::now();
                    let flops: f64 = rayon::broadcast(|_| f(ITERS)).into_iter().sum();
                    flops / t.elapsed().as_secs_f64() / 1e9
                })
                .fold(0.0, f64::max);
            Peak {
                kind,
                one_thread_gflops: one,
                all_threads_gflops: all,
            }
        })
        .collect()
}

/// Register-only loops: `CHAINS` independent accumulators (enough to cover
/// the FMA latency on two ports), no memory traffic inside the loop.
#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    const CHAINS: usize = 12;

    pub fn avx2(iters: u64) -> f64 {
        // SAFETY: only called after detecting AVX2 and FMA.
        unsafe { avx2_loop(iters) };
        (iters as usize * CHAINS * 8 * 2) as f64
    }

    pub fn avx512(iters: u64) -> f64 {
        // SAFETY: only called after detecting AVX-512F.
        unsafe { avx512_loop(iters) };
        (iters as usize * CHAINS * 16 * 2) as f64
    }

    pub fn avx512_bf16(iters: u64) -> f64 {
        // SAFETY: only called after detecting AVX512-BF16.
        unsafe { avx512_bf16_loop(iters) };
        // Each lane adds two bf16 products: 4 FLOPs per f32 lane.
        (iters as usize * CHAINS * 16 * 4) as f64
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_loop(iters: u64) {
        let (a, b) = (_mm256_set1_ps(0.999), _mm256_set1_ps(1e-7));
        let mut c = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for v in &mut c {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        std::hint::black_box(c);
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_loop(iters: u64) {
        let (a, b) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-7));
        let mut c = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for v in &mut c {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        std::hint::black_box(c);
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn avx512_bf16_loop(iters: u64) {
        let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
        let mut c = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for v in &mut c {
                *v = _mm512_dpbf16_ps(*v, a, a);
            }
        }
        std::hint::black_box(c);
    }
}
