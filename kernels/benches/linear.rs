//! `linear` against candle's `x.matmul(&w.t())` on Qwen2.5-0.5B shapes:
//! decode (m = 1, weight bytes/s is the figure), batched decode (m = 16)
//! and a prefill chunk (m = 512), with f32 and bf16 weights.
//!
//! Each call reads the next of several weight copies (≥ 512 MiB in all), so
//! weights come from DRAM as they do in a real forward pass, not from the
//! 32 MiB L3 that a 17 MB matrix would otherwise sit in.
//!
//! Run with `cargo bench -p tandem-kernels --bench linear`.

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::cell::Cell;
use std::time::Duration;
use tandem_kernels::linear;

const COPIES_BYTES: usize = 512 << 20;

struct Case {
    m: usize,
    k: usize,
    n: usize,
}

fn weights(c: &Case, dtype: DType) -> Vec<Tensor> {
    let bytes = c.n * c.k * dtype.size_in_bytes();
    let copies = COPIES_BYTES.div_ceil(bytes).clamp(2, 64);
    (0..copies)
        .map(|_| {
            let w = Tensor::randn(0f32, 0.05, (c.n, c.k), &Device::Cpu).unwrap();
            w.to_dtype(dtype).unwrap()
        })
        .collect()
}

fn bench(crit: &mut Criterion, group: &str, cases: &[Case]) {
    let mut g = crit.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for c in cases {
        let x = Tensor::randn(0f32, 1.0, (c.m, c.k), &Device::Cpu).unwrap();
        for wd in [DType::F32, DType::BF16] {
            let ws = weights(c, wd);
            let shape = format!("m{}_k{}_n{}_w{}", c.m, c.k, c.n, wd.as_str());
            g.throughput(Throughput::Bytes((c.n * c.k * wd.size_in_bytes()) as u64));
            let next = Cell::new(0usize);
            let pick = || {
                next.set(next.get() + 1);
                &ws[next.get() % ws.len()]
            };
            g.bench_function(BenchmarkId::new("tandem", &shape), |b| {
                b.iter(|| linear(&x, pick(), None).unwrap())
            });
            // candle needs matching dtypes: bf16 weights run bf16 × bf16.
            let xc = x.to_dtype(wd).unwrap();
            g.bench_function(BenchmarkId::new("candle", &shape), |b| {
                b.iter(|| xc.matmul(&pick().t().unwrap()).unwrap())
            });
        }
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let cases = [
        Case {
            m: 1,
            k: 896,
            n: 9728,
        },
        Case {
            m: 1,
            k: 4864,
            n: 896,
        },
        Case {
            m: 1,
            k: 896,
            n: 151_936,
        },
    ];
    bench(c, "linear_m1", &cases);
}

fn batched(c: &mut Criterion) {
    bench(
        c,
        "linear_m16",
        &[Case {
            m: 16,
            k: 896,
            n: 9728,
        }],
    );
}

fn prefill(c: &mut Criterion) {
    bench(
        c,
        "linear_m512",
        &[Case {
            m: 512,
            k: 896,
            n: 9728,
        }],
    );
}

criterion_group!(benches, decode, batched, prefill);
criterion_main!(benches);
