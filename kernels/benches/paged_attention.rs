//! Decode-step paged attention with Qwen2.5-0.5B's attention shape (14 query
//! heads, 2 KV heads, head_dim 64, blocks of 16), shuffled block tables.
//! Kept short: `cargo bench -p tandem-kernels` runs in about a minute.

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Duration;
use tandem_kernels::{paged_attention, AttentionMetadata, HostArena, KvCacheLayout};

const NUM_HEADS: usize = 14;
const NUM_KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;
const BLOCK_SIZE: usize = 16;
/// Two layers so consecutive blocks of one layer are not adjacent in memory,
/// as in a real arena.
const NUM_LAYERS: usize = 2;

struct Setup {
    q: Tensor,
    arena: HostArena,
    layout: KvCacheLayout,
    meta: AttentionMetadata,
}

/// `batch` sequences, each with `query_len` new tokens at the end of `context_len`.
fn setup(batch: usize, context_len: usize, query_len: usize, dtype: DType) -> Setup {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let blocks_per_seq = context_len.div_ceil(BLOCK_SIZE);
    let num_blocks = batch * blocks_per_seq;
    let layout = KvCacheLayout {
        num_blocks,
        num_layers: NUM_LAYERS,
        block_size: BLOCK_SIZE,
        num_kv_heads: NUM_KV_HEADS,
        head_dim: HEAD_DIM,
    };
    let random = |rng: &mut ChaCha8Rng, shape: &[usize]| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    let n: usize = layout.shape().iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let arena = HostArena::from_f32(&values, dtype).unwrap();
    let q = random(&mut rng, &[batch * query_len, NUM_HEADS, HEAD_DIM]);
    let mut block_tables: Vec<u32> = (0..num_blocks as u32).collect();
    block_tables.shuffle(&mut rng);
    let meta = AttentionMetadata {
        query_start_loc: (0..=batch as u32).map(|i| i * query_len as u32).collect(),
        context_lens: vec![context_len as u32; batch],
        block_tables,
        max_blocks_per_seq: blocks_per_seq,
        slot_mapping: vec![],
    };
    Setup {
        q,
        arena,
        layout,
        meta,
    }
}

fn run(s: &Setup) -> Tensor {
    paged_attention(&s.q, &s.arena, &s.layout, 1, &s.meta, 0.125, None).unwrap()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for dtype in [DType::F32, DType::BF16] {
        for batch in [1, 16] {
            for context_len in [512, 2048] {
                let s = setup(batch, context_len, 1, dtype);
                let id = BenchmarkId::new(format!("{dtype:?}/batch{batch}"), context_len);
                group.bench_with_input(id, &s, |b, s| b.iter(|| black_box(run(s))));
            }
        }
    }
    group.finish();
}

/// One 512-token prefill chunk behind 1536 cached tokens, for scale.
fn prefill_chunk(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefill_chunk");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for dtype in [DType::F32, DType::BF16] {
        let s = setup(1, 2048, 512, dtype);
        group.bench_with_input(
            BenchmarkId::new(format!("{dtype:?}"), "512of2048"),
            &s,
            |b, s| b.iter(|| black_box(run(s))),
        );
    }
    group.finish();
}

criterion_group!(benches, decode, prefill_chunk);
criterion_main!(benches);
