//! paged_attention against a naive dense attention (see `common`).

mod common;

use candle_core::{DType, Device, Tensor};
use common::{build, check, chunk, decode, mixed_batch, Scenario, Seq};
use proptest::prelude::*;
use tandem_kernels::{paged_attention, AttentionMetadata, HostArena, KernelError, KvCacheLayout};

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

fn qwen_like(dtype: DType, seqs: Vec<Seq>) -> Scenario {
    Scenario {
        dtype,
        num_kv_heads: 2,
        group: 7,
        head_dim: 64,
        block_size: 16,
        seqs,
        sliding_window: None,
        softmax_scale: 0.125,
        seed: 7,
    }
}

/// Three prefill chunks behind cached context (one a fresh prompt) and four
/// decodes, in one call, for each dtype.
#[test]
fn mixed_batch_of_prefill_chunks_and_decodes() {
    let seqs = mixed_batch();
    for dtype in DTYPES {
        check(&qwen_like(dtype, seqs.clone())).unwrap();
    }
}

/// A lone long decode is split across partitions and merged again.
#[test]
fn single_long_decode_matches_after_partition_merge() {
    for dtype in DTYPES {
        check(&qwen_like(dtype, vec![decode(2048)])).unwrap();
        check(&Scenario {
            block_size: 32,
            ..qwen_like(dtype, vec![decode(1999)])
        })
        .unwrap();
    }
}

/// Mistral semantics: the last `w` positions including the token itself.
#[test]
fn sliding_window_limits_what_each_token_sees() {
    let seqs = vec![chunk(700, 30), decode(1000), decode(50), chunk(33, 33)];
    for w in [1, 16, 100, 4096] {
        check(&Scenario {
            sliding_window: Some(w),
            ..qwen_like(DType::F32, seqs.clone())
        })
        .unwrap();
    }
    check(&Scenario {
        sliding_window: Some(100),
        ..qwen_like(DType::BF16, seqs)
    })
    .unwrap();
}

/// A window of 1 returns each token's own V row.
#[test]
fn window_of_one_returns_own_value() {
    let s = Scenario {
        sliding_window: Some(1),
        ..qwen_like(DType::F32, vec![chunk(40, 5)])
    };
    let b = build(&s);
    let out = paged_attention(&b.q, &b.arena, &b.layout, b.layer, &b.meta, 0.125, Some(1)).unwrap();
    let out = common::to_f32_vec(&out);
    for j in 0..5 {
        for h in 0..14 {
            let got = &out[(j * 14 + h) * 64..][..64];
            let want = &b.v[0][((35 + j) * 2 + h / 7) * 64..][..64];
            common::assert_close(got, want, 1e-6).unwrap();
        }
    }
}

/// Large scores (logits up to about ±40) exercise the running-max rescale
/// of the online softmax.
#[test]
fn sharp_softmax_is_stable() {
    let s = Scenario {
        softmax_scale: 8.0,
        ..qwen_like(DType::F32, vec![chunk(500, 20), decode(777)])
    };
    check(&s).unwrap();
}

/// q may be a strided view (a narrow of a fused qkv tensor).
#[test]
fn strided_q_view_gives_the_same_result() {
    let s = qwen_like(DType::F32, vec![chunk(100, 3), decode(60)]);
    let b = build(&s);
    let wide = Tensor::cat(&[&b.q, &b.q.zeros_like().unwrap()], 1).unwrap();
    let q_view = wide.narrow(1, 0, 14).unwrap();
    assert!(!q_view.is_contiguous());
    let a = paged_attention(&b.q, &b.arena, &b.layout, b.layer, &b.meta, 0.125, None).unwrap();
    let c = paged_attention(&q_view, &b.arena, &b.layout, b.layer, &b.meta, 0.125, None).unwrap();
    assert_eq!(common::to_f32_vec(&a), common::to_f32_vec(&c));
}

#[test]
fn empty_batch_returns_empty_output() {
    let layout = KvCacheLayout {
        num_blocks: 2,
        num_layers: 1,
        block_size: 16,
        num_kv_heads: 2,
        head_dim: 64,
    };
    let arena = HostArena::for_layout(&layout, DType::F32).unwrap();
    let q = Tensor::zeros((0, 14, 64), DType::F32, &Device::Cpu).unwrap();
    let out = paged_attention(
        &q,
        &arena,
        &layout,
        0,
        &AttentionMetadata::default(),
        0.125,
        None,
    )
    .unwrap();
    assert_eq!(out.dims(), &[0, 14, 64]);
}

/// candle keeps wrapped errors as `dyn Display`, so the typed error is
/// checked through its message.
fn assert_refused<T: std::fmt::Debug>(r: candle_core::Result<T>, want: KernelError) {
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains(&want.to_string()), "got: {msg}\nwant: {want}");
}

#[test]
fn bad_inputs_are_refused_with_clear_errors() {
    let s = qwen_like(DType::F32, vec![chunk(40, 4), decode(20)]);
    let b = build(&s);
    let (l, m) = (b.layout, &b.meta);
    let run = |q: &Tensor, layer: usize, meta: &AttentionMetadata, scale: f32, w: Option<usize>| {
        paged_attention(q, &b.arena, &l, layer, meta, scale, w)
    };
    let op = "paged_attention";
    let q_bf16 = b.q.to_dtype(DType::BF16).unwrap();
    let e = KernelError::DtypeMismatch {
        op,
        what: "q",
        expected: DType::F32,
        got: DType::BF16,
    };
    assert_refused(run(&q_bf16, 1, m, 1.0, None), e);
    let e = KernelError::ShapeMismatch {
        op,
        what: "q",
        expected: "[num_tokens, num_heads, 64]".into(),
        got: vec![5, 14, 32],
    };
    assert_refused(run(&b.q.narrow(2, 0, 32).unwrap(), 1, m, 1.0, None), e);
    let e = KernelError::HeadsNotMultiple {
        num_heads: 13,
        num_kv_heads: 2,
    };
    assert_refused(run(&b.q.narrow(1, 0, 13).unwrap(), 1, m, 1.0, None), e);
    assert_refused(
        run(&b.q, 2, m, 1.0, None),
        KernelError::LayerOutOfRange {
            op,
            layer: 2,
            num_layers: 2,
        },
    );
    assert_refused(
        run(&b.q, 1, m, f32::NAN, None),
        KernelError::BadSoftmaxScale(f32::NAN),
    );
    assert_refused(
        run(&b.q, 1, m, 1.0, Some(0)),
        KernelError::ZeroSlidingWindow,
    );
    let e = KernelError::BadQueryStartLoc {
        reason: "ends at 5 but q has 4 rows".into(),
    };
    assert_refused(run(&b.q.narrow(0, 0, 4).unwrap(), 1, m, 1.0, None), e);

    let mut bad = m.clone();
    bad.block_tables[0] = l.num_blocks as u32;
    let e = KernelError::BlockIdOutOfRange {
        seq: 0,
        index: 0,
        block: l.num_blocks as u32,
        num_blocks: l.num_blocks,
    };
    assert_refused(run(&b.q, 1, &bad, 1.0, None), e);
    let mut bad = m.clone();
    let capacity = bad.max_blocks_per_seq * 16;
    bad.context_lens[1] = capacity as u32 + 1;
    let e = KernelError::ContextTooLong {
        seq: 1,
        context_len: capacity + 1,
        capacity,
        max_blocks_per_seq: bad.max_blocks_per_seq,
        block_size: 16,
    };
    assert_refused(run(&b.q, 1, &bad, 1.0, None), e);
    let mut bad = m.clone();
    bad.context_lens[0] = 3;
    let e = KernelError::QueryLongerThanContext {
        seq: 0,
        query_len: 4,
        context_len: 3,
    };
    assert_refused(run(&b.q, 1, &bad, 1.0, None), e);

    let wrong = KvCacheLayout {
        block_size: 32,
        ..l
    };
    let e = KernelError::ShapeMismatch {
        op,
        what: "arena",
        expected: format!(
            "{:?} ({} elements)",
            wrong.shape(),
            wrong.shape().iter().product::<usize>()
        ),
        got: vec![l.shape().iter().product()],
    };
    assert_refused(paged_attention(&b.q, &b.arena, &wrong, 1, m, 1.0, None), e);
    // An arena of another dtype cannot even be made.
    assert_eq!(
        HostArena::zeros(b.arena.len_elems(), DType::U32).unwrap_err(),
        KernelError::UnsupportedDtype {
            op: "HostArena",
            dtype: DType::U32,
        }
    );
    let q_bf16 = b.q.to_dtype(DType::BF16).unwrap();
    let e = KernelError::DtypeMismatch {
        op,
        what: "q",
        expected: DType::F32,
        got: DType::BF16,
    };
    assert_refused(paged_attention(&q_bf16, &b.arena, &l, 1, m, 1.0, None), e);
}

/// Log-uniform context lengths in 1..=2048, so short and long both show up.
fn seq_strategy() -> impl Strategy<Value = Seq> {
    (0.0f64..=11.0, prop::bool::ANY, 2usize..=32).prop_map(|(log2, is_decode, q)| {
        let context_len = (2f64.powf(log2).round() as usize).clamp(1, 2048);
        let query_len = if is_decode { 1 } else { q.min(context_len) };
        Seq {
            context_len,
            query_len,
        }
    })
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        prop::sample::select(DTYPES.to_vec()),
        1usize..=2,
        prop::sample::select(vec![1usize, 2, 7]),
        prop::sample::select(vec![20usize, 64, 128]),
        prop::sample::select(vec![16usize, 32]),
        prop::collection::vec(seq_strategy(), 1..=5),
        prop::option::weighted(0.25, 1usize..=300),
        prop::sample::select(vec![None, Some(1.0f32)]),
        any::<u64>(),
    )
        .prop_map(
            |(
                dtype,
                num_kv_heads,
                group,
                head_dim,
                block_size,
                seqs,
                sliding_window,
                scale,
                seed,
            )| Scenario {
                dtype,
                num_kv_heads,
                group,
                head_dim,
                block_size,
                seqs,
                sliding_window,
                softmax_scale: scale.unwrap_or(1.0 / (head_dim as f32).sqrt()),
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_match_dense_attention(s in scenario_strategy()) {
        check(&s).map_err(TestCaseError::fail)?;
    }
}
