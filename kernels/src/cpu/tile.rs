//! The attention inner kernel: one work item (a tile's query vectors
//! against a run of KV blocks) with online softmax, in f32.
//!
//! Per block, the K and V rows of the tile's KV head are viewed as f32 once
//! (widened for bf16/f16) and reused by every query vector of the tile. Each
//! query vector only scores the slots it may see (causal limit and sliding
//! window give a contiguous range per token), so nothing is masked and the
//! running max / sum / accumulator are rescaled once per block, not per key.

use super::block_math::{block_accumulate, block_scores, tile_scores};
use super::plan::{Tile, WorkItem};
use super::prefetch::prefetch_rows;
use crate::checks::RowView;
use crate::element::{Element, Rows};
use crate::layout::{KvCacheLayout, K, V};
use crate::metadata::AttentionMetadata;
use crate::vecmath::{exp_nonpositive, exp_shifted_sum, max, scale, LANES};

/// Tiles with at least this many query vectors score them one per vector
/// lane ([`tile_scores`]); smaller ones (decode without GQA) use dot products.
const LANE_SCORING_MIN_QUERIES: usize = 4;

/// Read-only inputs shared by all work items of one call.
pub(crate) struct Inputs<'a, E> {
    pub q: &'a [E],
    pub q_view: RowView,
    /// The arena's elements, starting at block 0.
    pub arena: &'a [E],
    pub layout: &'a KvCacheLayout,
    pub layer: usize,
    pub meta: &'a AttentionMetadata,
    pub softmax_scale: f32,
    pub sliding_window: Option<usize>,
    /// Query heads per KV head.
    pub group: usize,
}

/// Unnormalised softmax state of a work item, per query vector `t * group + h`:
/// running max `m`, sum of weights `l`, weighted V sum `acc` (`head_dim` each).
#[derive(Debug, Default)]
pub(crate) struct Partial {
    pub m: Vec<f32>,
    pub l: Vec<f32>,
    pub acc: Vec<f32>,
}

/// Buffers reused across the work items one rayon task runs.
#[derive(Default)]
pub(crate) struct Scratch {
    q: Vec<f32>,
    scores: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    qt: Vec<f32>,
    lane_scores: Vec<f32>,
}

/// Runs one work item. `FMA` must match the target features of the caller
/// (see `vecmath`). The head dim stays a run-time value on purpose: with a
/// constant, LLVM fully unrolls the dot products and then fails to
/// vectorise them.
#[inline(always)]
pub(crate) fn attend<E: Element, const FMA: bool>(
    inp: &Inputs<'_, E>,
    tile: &Tile,
    item: &WorkItem,
    scratch: &mut Scratch,
) -> Partial {
    let d = inp.layout.head_dim;
    let (g, bs) = (inp.group, inp.layout.block_size);
    let tokens = tile.q_rows.len();
    let nq = tokens * g;
    load_queries(inp, tile, d, &mut scratch.q);
    let lanes = nq >= LANE_SCORING_MIN_QUERIES;
    let nqp = nq.div_ceil(LANES) * LANES;
    if lanes {
        transpose_queries(&scratch.q, d, nqp, &mut scratch.qt);
    }
    let mut out = Partial {
        m: vec![f32::NEG_INFINITY; nq],
        l: vec![0.0; nq],
        acc: vec![0.0; nq * d],
    };

    let table = inp.meta.block_table(tile.seq);
    let context_len = inp.meta.context_lens[tile.seq] as usize;
    let slot_stride = inp.layout.slot_stride();
    scratch.scores.resize(bs, 0.0);
    for logical in item.blocks.clone() {
        let block_start = logical * bs;
        let n = bs.min(context_len - block_start);
        // Slots of this block token `t` sees (block-relative, maybe empty);
        // both ends grow with `t`, so tokens 0 and last bound the union.
        let visible = |t: usize| {
            let pos = tile.first_pos + t;
            let lo = inp
                .sliding_window
                .map_or(0, |w| (pos + 1).saturating_sub(w))
                .saturating_sub(block_start);
            let hi = (pos + 1).saturating_sub(block_start).min(n);
            lo.min(hi)..hi
        };
        let span = visible(0).start..visible(tokens - 1).end;
        if span.is_empty() {
            continue;
        }
        let physical = table[logical] as usize;
        if logical + 1 < item.blocks.end {
            prefetch_block(inp, table[logical + 1] as usize, tile.kv_head);
        }
        let k_base = inp
            .layout
            .elem_offset(physical, inp.layer, K, 0, tile.kv_head);
        let v_base = inp
            .layout
            .elem_offset(physical, inp.layer, V, 0, tile.kv_head);
        let k = E::rows(&inp.arena[k_base..], n, slot_stride, d, &mut scratch.k);
        let v = E::rows(&inp.arena[v_base..], n, slot_stride, d, &mut scratch.v);
        if lanes {
            tile_scores::<FMA>(
                &scratch.qt,
                nqp,
                &k,
                span.start,
                span.len(),
                &mut scratch.lane_scores,
            );
        }
        for t in 0..tokens {
            let slots = visible(t);
            if slots.is_empty() {
                continue;
            }
            for qi in t * g..(t + 1) * g {
                let scores = &mut scratch.scores[..slots.len()];
                if lanes {
                    let group = &scratch.lane_scores[(qi / LANES) * span.len() * LANES..];
                    let first = (slots.start - span.start) * LANES + qi % LANES;
                    for (s, &x) in scores.iter_mut().zip(group[first..].iter().step_by(LANES)) {
                        *s = x;
                    }
                } else {
                    block_scores::<FMA>(&scratch.q[qi * d..][..d], &k, slots.start, scores);
                }
                online_update::<FMA>(&mut out, qi, d, scores, &v, slots.start);
            }
        }
    }
    out
}

/// Folds one block's `scores` (overwritten with their weights) for query
/// vector `qi` into its running state: rescale to the new max, add the
/// weights and the weighted V rows `first..`.
#[inline(always)]
fn online_update<const FMA: bool>(
    out: &mut Partial,
    qi: usize,
    d: usize,
    scores: &mut [f32],
    v: &Rows<'_>,
    first: usize,
) {
    let m_old = out.m[qi];
    let m_new = m_old.max(max(scores));
    let alpha = exp_nonpositive::<FMA>(m_old - m_new);
    let sum = exp_shifted_sum::<FMA>(scores, m_new);
    out.l[qi] = out.l[qi] * alpha + sum;
    out.m[qi] = m_new;
    let acc = &mut out.acc[qi * d..][..d];
    if alpha != 1.0 {
        scale(acc, alpha);
    }
    block_accumulate::<FMA>(acc, scores, v, first);
}

/// `qt[c * nqp + qi] = q[qi * d + c]`, padding lanes zero.
#[inline(always)]
fn transpose_queries(q: &[f32], d: usize, nqp: usize, qt: &mut Vec<f32>) {
    qt.clear();
    qt.resize(d * nqp, 0.0);
    for (qi, row) in q.chunks_exact(d).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            qt[c * nqp + qi] = x;
        }
    }
}

/// Prefetches one KV head's K and V rows of a (full) block.
#[inline(always)]
fn prefetch_block<E: Element>(inp: &Inputs<'_, E>, physical: usize, kv_head: usize) {
    let l = inp.layout;
    for kv in [K, V] {
        let base = l.elem_offset(physical, inp.layer, kv, 0, kv_head);
        prefetch_rows(
            &inp.arena[base..],
            l.block_size,
            l.slot_stride(),
            l.head_dim,
        );
    }
}

/// Widens the tile's query rows to f32, pre-multiplied by the softmax scale.
#[inline(always)]
fn load_queries<E: Element>(inp: &Inputs<'_, E>, tile: &Tile, d: usize, dst: &mut Vec<f32>) {
    let g = inp.group;
    dst.resize(tile.q_rows.len() * g * d, 0.0);
    for (t, token) in tile.q_rows.clone().enumerate() {
        for h in 0..g {
            let src = &inp.q[inp.q_view.row(token, tile.kv_head * g + h)];
            let row = &mut dst[(t * g + h) * d..][..d];
            for (o, &x) in row.iter_mut().zip(src) {
                *o = x.to_f32() * inp.softmax_scale;
            }
        }
    }
}
