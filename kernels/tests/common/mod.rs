//! Test fixtures: random batches written into a NaN-poisoned arena through
//! `reshape_and_cache`, and a naive dense attention to compare against.
//! Any read outside a sequence's context (another layer, an unused block,
//! a slot past the end) pulls a NaN into the output and fails the check.
#![allow(dead_code)]

#[cfg(feature = "cuda")]
pub mod gpu;

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_kernels::{reshape_and_cache, AttentionMetadata, HostArena, KvCacheLayout};

/// One sequence of a batch: `context_len` tokens cached in total, of which
/// the last `query_len` are this step's queries.
#[derive(Clone, Copy, Debug)]
pub struct Seq {
    pub context_len: usize,
    pub query_len: usize,
}

/// A decode: one query token at the end of `context_len` cached tokens.
pub fn decode(context_len: usize) -> Seq {
    Seq {
        context_len,
        query_len: 1,
    }
}

/// A prefill chunk: the last `query_len` of `context_len` tokens.
pub fn chunk(context_len: usize, query_len: usize) -> Seq {
    Seq {
        context_len,
        query_len,
    }
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub dtype: DType,
    pub num_kv_heads: usize,
    pub group: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub seqs: Vec<Seq>,
    pub sliding_window: Option<usize>,
    pub softmax_scale: f32,
    pub seed: u64,
}

/// A scenario made concrete. K/V/q hold the values as stored (already
/// rounded to `dtype`), widened to f32.
pub struct Batch {
    pub layout: KvCacheLayout,
    pub layer: usize,
    pub arena: HostArena,
    pub q: Tensor,
    pub meta: AttentionMetadata,
    /// Per seq, `[context_len, num_kv_heads, head_dim]`.
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    /// `[num_tokens, num_heads, head_dim]`.
    pub q_f32: Vec<f32>,
}

pub const NUM_LAYERS: usize = 2;
pub const LAYER: usize = 1;
const SPARE_BLOCKS: usize = 3;

pub fn random_values(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Rounds through `dtype` the way the tensors store the values.
pub fn round_trip(xs: &[f32], dtype: DType) -> Vec<f32> {
    let t = Tensor::from_slice(xs, xs.len(), &Device::Cpu).unwrap();
    t.to_dtype(dtype)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub fn tensor(xs: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_slice(xs, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

pub fn to_f32_vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub fn build(s: &Scenario) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let (bs, kvh, d) = (s.block_size, s.num_kv_heads, s.head_dim);
    let blocks_per_seq: Vec<usize> = s.seqs.iter().map(|q| q.context_len.div_ceil(bs)).collect();
    let num_blocks = blocks_per_seq.iter().sum::<usize>() + SPARE_BLOCKS;
    let layout = KvCacheLayout {
        num_blocks,
        num_layers: NUM_LAYERS,
        block_size: bs,
        num_kv_heads: kvh,
        head_dim: d,
    };
    let arena_len: usize = layout.shape().iter().product();
    let arena = HostArena::from_f32(&vec![f32::NAN; arena_len], s.dtype).unwrap();

    // Shuffled physical blocks; one extra table column holds garbage the
    // kernel must never read.
    let mut free: Vec<u32> = (0..num_blocks as u32).collect();
    free.shuffle(&mut rng);
    let max_blocks_per_seq = blocks_per_seq.iter().max().copied().unwrap_or(0) + 1;
    let mut block_tables = vec![u32::MAX; s.seqs.len() * max_blocks_per_seq];
    for (i, &n) in blocks_per_seq.iter().enumerate() {
        for j in 0..n {
            block_tables[i * max_blocks_per_seq + j] = free.pop().unwrap();
        }
    }

    let row = kvh * d;
    let (mut k, mut v, mut slots, mut k_all, mut v_all) = (vec![], vec![], vec![], vec![], vec![]);
    for (i, seq) in s.seqs.iter().enumerate() {
        k.push(round_trip(
            &random_values(&mut rng, seq.context_len * row),
            s.dtype,
        ));
        v.push(round_trip(
            &random_values(&mut rng, seq.context_len * row),
            s.dtype,
        ));
        k_all.extend_from_slice(&k[i]);
        v_all.extend_from_slice(&v[i]);
        for pos in 0..seq.context_len {
            let block = block_tables[i * max_blocks_per_seq + pos / bs] as i64;
            slots.push(block * bs as i64 + (pos % bs) as i64);
        }
    }
    let n = slots.len();
    let (kt, vt) = (
        tensor(&k_all, &[n, kvh, d], s.dtype),
        tensor(&v_all, &[n, kvh, d], s.dtype),
    );
    reshape_and_cache(&arena, &kt, &vt, &layout, LAYER, &slots).unwrap();

    let mut query_start_loc = vec![0u32];
    let mut slot_mapping = vec![];
    for (i, seq) in s.seqs.iter().enumerate() {
        query_start_loc.push(query_start_loc[i] + seq.query_len as u32);
        let first = s.seqs[..i].iter().map(|q| q.context_len).sum::<usize>() + seq.context_len
            - seq.query_len;
        slot_mapping.extend_from_slice(&slots[first..first + seq.query_len]);
    }
    let num_tokens = *query_start_loc.last().unwrap() as usize;
    let num_heads = kvh * s.group;
    let q_f32 = round_trip(
        &random_values(&mut rng, num_tokens * num_heads * d),
        s.dtype,
    );
    let q = tensor(&q_f32, &[num_tokens, num_heads, d], s.dtype);
    let meta = AttentionMetadata {
        query_start_loc,
        context_lens: s.seqs.iter().map(|q| q.context_len as u32).collect(),
        block_tables,
        max_blocks_per_seq,
        slot_mapping,
    };
    Batch {
        layout,
        layer: LAYER,
        arena,
        q,
        meta,
        k,
        v,
        q_f32,
    }
}

/// Dense causal attention, one query row at a time, accumulated in f64.
/// Also returns the largest |logit| seen (see [`check`]).
pub fn reference(s: &Scenario, b: &Batch) -> (Vec<f32>, f32) {
    let mut max_logit = 0.0f64;
    let (kvh, d, g) = (s.num_kv_heads, s.head_dim, s.group);
    let num_heads = kvh * g;
    let mut out = vec![0.0f32; b.q_f32.len()];
    let mut token = 0;
    for (i, seq) in s.seqs.iter().enumerate() {
        for j in 0..seq.query_len {
            let pos = seq.context_len - seq.query_len + j;
            let first = s.sliding_window.map_or(0, |w| (pos + 1).saturating_sub(w));
            for h in 0..num_heads {
                let q = &b.q_f32[(token * num_heads + h) * d..][..d];
                let kv_row = |t: usize| (t * kvh + h / g) * d;
                let scores: Vec<f64> = (first..=pos)
                    .map(|t| {
                        let k = &b.k[i][kv_row(t)..][..d];
                        q.iter()
                            .zip(k)
                            .map(|(&x, &y)| x as f64 * y as f64)
                            .sum::<f64>()
                            * s.softmax_scale as f64
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                max_logit = scores.iter().fold(max_logit, |a, x| a.max(x.abs()));
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let total: f64 = w.iter().sum();
                for e in 0..d {
                    let acc: f64 = (first..=pos)
                        .zip(&w)
                        .map(|(t, wt)| wt * b.v[i][kv_row(t) + e] as f64)
                        .sum();
                    out[(token * num_heads + h) * d + e] = (acc / total) as f32;
                }
            }
            token += 1;
        }
    }
    (out, max_logit as f32)
}

/// Tolerance per dtype. The reference sees the same rounded inputs, so what
/// remains is f32 accumulation (~1e-6 on outputs bounded by 1) plus, for the
/// narrow types, rounding the output itself: half an ulp is 2^-9 relative for
/// bf16 and 2^-12 for f16.
pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 1e-3,
        DType::BF16 => 8e-3,
        other => panic!("no tolerance for {other:?}"),
    }
}

pub fn assert_close(got: &[f32], want: &[f32], tol: f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} != {}", got.len(), want.len()));
    }
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let close = (a - b).abs() <= tol * (1.0 + b.abs());
        if !close || a.is_nan() {
            return Err(format!("element {i}: got {a}, want {b} (tol {tol})"));
        }
    }
    Ok(())
}

/// Runs the kernel on the scenario and compares with the reference. Each
/// f32 logit carries a rounding error proportional to its size (and to the
/// kernel's summation order), which softmax passes on to the output, so the
/// dtype's tolerance grows by 1e-6 per unit of the largest |logit|.
pub fn check(s: &Scenario) -> Result<(), String> {
    let b = build(s);
    let out = cpu_attention(s, &b).map_err(|e| e.to_string())?;
    if out.dims() != b.q.dims() || out.dtype() != s.dtype {
        return Err(format!(
            "output {:?} {:?}, q {:?} {:?}",
            out.dims(),
            out.dtype(),
            b.q.dims(),
            s.dtype
        ));
    }
    let (want, max_logit) = reference(s, &b);
    let tol = tolerance(s.dtype) + 1e-6 * max_logit;
    assert_close(&to_f32_vec(&out), &want, tol).map_err(|e| format!("{e}\n{s:?}"))
}

/// Three prefill chunks behind cached context (one a fresh prompt) and
/// four decodes: the ragged mixed batch both attention suites run.
pub fn mixed_batch() -> Vec<Seq> {
    vec![
        chunk(300, 40),
        decode(1),
        chunk(1000, 17),
        decode(2048),
        chunk(64, 64),
        decode(17),
        decode(512),
    ]
}

/// The CPU paged_attention of the scenario's batch.
pub fn cpu_attention(s: &Scenario, b: &Batch) -> candle_core::Result<Tensor> {
    tandem_kernels::paged_attention(
        &b.q,
        &b.arena,
        &b.layout,
        b.layer,
        &b.meta,
        s.softmax_scale,
        s.sliding_window,
    )
}
