//! The CUDA reshape_and_cache and paged_attention against the CPU kernels
//! and the dense reference of `common`: NaN-poisoned arenas, shuffled block
//! tables with a garbage column, ragged mixed batches, GQA groups from 1 to
//! 16, head dims from 20 to 256, sliding windows, partitioned long decodes.
//! Skipped without a GPU.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Tensor};
use common::gpu::{download, kernels, upload, Elem};
use common::{
    assert_close, build, chunk, cpu_attention, decode, mixed_batch, reference, tolerance, Scenario,
    Seq,
};
use half::{bf16, f16};
use tandem_kernels::cuda::{AttentionConfig, CudaKernels, QStrides};
use tandem_kernels::{reshape_and_cache, KvCacheLayout};

fn scenario(
    dtype: DType,
    num_kv_heads: usize,
    group: usize,
    head_dim: usize,
    seqs: Vec<Seq>,
) -> Scenario {
    Scenario {
        dtype,
        num_kv_heads,
        group,
        head_dim,
        block_size: 16,
        seqs,
        sliding_window: None,
        softmax_scale: 1.0 / (head_dim as f32).sqrt(),
        seed: 11,
    }
}

/// Runs the GPU kernel on the scenario with q inside a wider fused-qkv-like
/// buffer (so q's token stride is not its row length); returns the output.
fn gpu_attention<T: Elem>(k: &CudaKernels, s: &Scenario) -> (Vec<f32>, common::Batch) {
    let b = build(s);
    let (n, heads, d) = (b.q.dims()[0], s.num_kv_heads * s.group, s.head_dim);
    let extra = 2 * s.num_kv_heads * d;
    let wide = Tensor::cat(
        &[
            &b.q.reshape((n, heads * d)).unwrap(),
            &Tensor::zeros((n, extra), s.dtype, b.q.device()).unwrap(),
        ],
        1,
    )
    .unwrap();
    let qd = upload::<T>(k, &wide);
    let arena = upload::<T>(k, &b.arena.to_tensor(&b.layout.shape()).unwrap());
    let meta = k
        .upload_attention_metadata(
            &b.meta,
            n,
            &b.layout,
            AttentionConfig {
                num_heads: heads,
                sliding_window: s.sliding_window,
            },
        )
        .unwrap();
    let mut out = k.stream().alloc_zeros::<T>((n * heads * d).max(1)).unwrap();
    k.paged_attention(
        &mut out.as_view_mut(),
        &qd.as_view(),
        QStrides {
            token_stride: heads * d + extra,
            head_stride: d,
        },
        &arena.as_view(),
        b.layer,
        s.softmax_scale,
        &meta,
    )
    .unwrap();
    (download(k, &out, n * heads * d), b)
}

/// GPU output against the dense reference (the CPU kernel's own test
/// criterion) and against the CPU kernel.
fn check<T: Elem>(k: &CudaKernels, s: &Scenario) {
    assert_eq!(T::DTYPE, s.dtype);
    let (got, b) = gpu_attention::<T>(k, s);
    let (want, max_logit) = reference(s, &b);
    let tol = tolerance(s.dtype) + 1e-6 * max_logit;
    assert_close(&got, &want, tol).unwrap_or_else(|e| panic!("vs reference: {e}\n{s:?}"));
    let cpu = cpu_attention(s, &b).unwrap();
    // Two roundings to the dtype may differ by one ulp of the output.
    assert_close(&got, &common::to_f32_vec(&cpu), 2.0 * tol)
        .unwrap_or_else(|e| panic!("vs CPU kernel: {e}\n{s:?}"));
}

#[test]
fn mixed_batch_of_prefill_chunks_and_decodes_in_every_dtype() {
    let Some(k) = kernels() else { return };
    check::<f32>(&k, &scenario(DType::F32, 2, 7, 64, mixed_batch()));
    check::<bf16>(&k, &scenario(DType::BF16, 2, 7, 64, mixed_batch()));
    check::<f16>(&k, &scenario(DType::F16, 2, 7, 64, mixed_batch()));
}

#[test]
fn gqa_groups_and_head_dims() {
    let Some(k) = kernels() else { return };
    // (kv heads, group, head dim): MHA, Llama-3-8B-like, Qwen3-like, wide
    // group, odd head dim, 256 (needs the shared-memory opt-in in f32).
    for (kvh, group, d) in [
        (4, 1, 64),
        (8, 4, 128),
        (8, 2, 128),
        (1, 16, 64),
        (2, 3, 20),
        (2, 2, 256),
    ] {
        let seqs = vec![chunk(200, 23), decode(333), decode(5), chunk(50, 50)];
        check::<bf16>(&k, &scenario(DType::BF16, kvh, group, d, seqs.clone()));
        check::<f32>(&k, &scenario(DType::F32, kvh, group, d, seqs));
    }
}

#[test]
fn lone_long_decodes_are_partitioned_and_merged() {
    let Some(k) = kernels() else { return };
    for dtype_seqs in [vec![decode(2048)], vec![decode(8191), decode(3000)]] {
        check::<f32>(&k, &scenario(DType::F32, 2, 7, 64, dtype_seqs.clone()));
        check::<bf16>(
            &k,
            &Scenario {
                block_size: 32,
                ..scenario(DType::BF16, 8, 4, 128, dtype_seqs)
            },
        );
    }
}

#[test]
fn sliding_window_limits_what_each_token_sees() {
    let Some(k) = kernels() else { return };
    let seqs = vec![chunk(700, 30), decode(1000), decode(50), chunk(33, 33)];
    for w in [1, 16, 100, 4096] {
        check::<f32>(
            &k,
            &Scenario {
                sliding_window: Some(w),
                ..scenario(DType::F32, 2, 7, 64, seqs.clone())
            },
        );
    }
    check::<bf16>(
        &k,
        &Scenario {
            sliding_window: Some(100),
            ..scenario(DType::BF16, 2, 7, 64, seqs)
        },
    );
}

#[test]
fn sharp_softmax_is_stable() {
    let Some(k) = kernels() else { return };
    let s = Scenario {
        softmax_scale: 8.0,
        ..scenario(DType::F32, 2, 7, 64, vec![chunk(500, 20), decode(777)])
    };
    check::<f32>(&k, &s);
}

fn reshape_and_cache_case<T: Elem>(k: &CudaKernels, dtype: DType) {
    let layout = KvCacheLayout {
        num_blocks: 7,
        num_layers: 3,
        block_size: 4,
        num_kv_heads: 2,
        head_dim: 24,
    };
    let slots = [13i64, -1, 0, 19, 6, -1, 7, 27];
    let n = slots.len();
    let row = layout.num_kv_heads * layout.head_dim;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
    // k and v inside one fused buffer [n, 3 * row] (q part left zero).
    let qkv: Vec<f32> = common::random_values(&mut rng, n * 3 * row);
    let qkv = common::tensor(&qkv, &[n, 3 * row], dtype);
    let arena_len: usize = layout.shape().iter().product();
    let arena = common::tensor(&vec![-7.0; arena_len], &layout.shape(), dtype);
    let host = tandem_kernels::HostArena::from_f32(&vec![-7.0; arena_len], dtype).unwrap();
    let kt = qkv
        .narrow(1, row, row)
        .unwrap()
        .reshape((n, 2, 24))
        .unwrap();
    let vt = qkv
        .narrow(1, 2 * row, row)
        .unwrap()
        .reshape((n, 2, 24))
        .unwrap();

    let mut ad = upload::<T>(k, &arena);
    let qd = upload::<T>(k, &qkv);
    let meta = tandem_kernels::AttentionMetadata {
        query_start_loc: vec![0, n as u32],
        context_lens: vec![n as u32],
        block_tables: vec![0, 1],
        max_blocks_per_seq: 2,
        slot_mapping: slots.to_vec(),
    };
    let dm = k
        .upload_attention_metadata(
            &meta,
            n,
            &layout,
            AttentionConfig {
                num_heads: 2,
                sliding_window: None,
            },
        )
        .unwrap();
    let kv = qd.as_view();
    k.reshape_and_cache(
        &mut ad.as_view_mut(),
        &kv.slice(row..),
        3 * row,
        &kv.slice(2 * row..),
        3 * row,
        1,
        &dm,
    )
    .unwrap();
    reshape_and_cache(&host, &kt, &vt, &layout, 1, &slots).unwrap();
    assert_eq!(download(k, &ad, arena_len), host.to_f32_vec(), "{dtype:?}");
}

#[test]
fn reshape_and_cache_writes_the_same_slots_as_the_cpu_kernel() {
    let Some(k) = kernels() else { return };
    reshape_and_cache_case::<f32>(&k, DType::F32);
    reshape_and_cache_case::<bf16>(&k, DType::BF16);
    reshape_and_cache_case::<f16>(&k, DType::F16);
}

#[test]
fn bad_metadata_is_refused_before_upload() {
    let Some(k) = kernels() else { return };
    let s = scenario(DType::F32, 2, 7, 64, vec![chunk(40, 4)]);
    let b = build(&s);
    let cfg = AttentionConfig {
        num_heads: 14,
        sliding_window: None,
    };
    let mut bad = b.meta.clone();
    bad.slot_mapping[0] = (b.layout.num_blocks * 16) as i64;
    assert!(k
        .upload_attention_metadata(&bad, 4, &b.layout, cfg)
        .is_err());
    let mut bad = b.meta.clone();
    bad.context_lens[0] = 1000;
    assert!(k
        .upload_attention_metadata(&bad, 4, &b.layout, cfg)
        .is_err());
    let cfg13 = AttentionConfig {
        num_heads: 13,
        ..cfg
    };
    assert!(k
        .upload_attention_metadata(&b.meta, 4, &b.layout, cfg13)
        .is_err());
}
