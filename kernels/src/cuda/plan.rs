//! Splits a batch into the work items of the CUDA paged-attention kernel
//! (`paged_attention.cu` describes them): pure host code, tested without a
//! GPU.
//!
//! A *tile* is up to `rows_per_item` query vectors: some tokens of one
//! sequence times some query heads of one KV head, so GQA heads and prompt
//! tokens share every K/V row the item loads. A tile reads the KV positions
//! its tokens can see: from the first token's window start (0 without a
//! window) to the last token's own position. When there are fewer tiles
//! than the GPU has room for (small decode batches over long contexts), a
//! tile's KV range is split into partitions whose partial softmax states a
//! second kernel merges.

use crate::metadata::AttentionMetadata;

/// `WorkItem::partial` of an item that writes its output directly.
pub(crate) const NO_PARTIAL: u32 = u32::MAX;
/// A partition reads at least this many KV positions: below that, merging
/// costs more than the extra parallelism gains.
const MIN_PARTITION_TOKENS: usize = 256;

/// One CUDA block's work; mirrors `WorkItem` in `paged_attention.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WorkItem {
    pub seq: u32,
    pub kv_head: u32,
    pub head_lo: u32,
    pub num_heads: u32,
    pub q_start: u32,
    pub num_tokens: u32,
    pub first_pos: u32,
    pub kv_lo: u32,
    pub kv_hi: u32,
    pub partial: u32,
}

impl WorkItem {
    pub const WORDS: usize = 10;

    fn words(&self) -> [u32; Self::WORDS] {
        [
            self.seq,
            self.kv_head,
            self.head_lo,
            self.num_heads,
            self.q_start,
            self.num_tokens,
            self.first_pos,
            self.kv_lo,
            self.kv_hi,
            self.partial,
        ]
    }
}

/// A tile computed in several partitions; mirrors `SplitTile` in
/// `paged_attention.cu`. Its partial states are slots
/// `first_partial .. first_partial + num_partials`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SplitTile {
    pub kv_head: u32,
    pub head_lo: u32,
    pub num_heads: u32,
    pub q_start: u32,
    pub num_tokens: u32,
    pub first_partial: u32,
    pub num_partials: u32,
}

impl SplitTile {
    pub const WORDS: usize = 8;

    fn words(&self) -> [u32; Self::WORDS] {
        [
            self.kv_head,
            self.head_lo,
            self.num_heads,
            self.q_start,
            self.num_tokens,
            self.first_partial,
            self.num_partials,
            0,
        ]
    }
}

/// What the planner needs besides the metadata.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanShape {
    pub num_kv_heads: usize,
    /// Query heads per KV head.
    pub group: usize,
    /// Query vectors one item holds (the kernel's tile, see `attention.rs`).
    pub rows_per_item: usize,
    pub sliding_window: Option<usize>,
    /// Split tiles' KV ranges while there are fewer items than this.
    pub target_items: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AttentionPlan {
    pub items: Vec<WorkItem>,
    pub splits: Vec<SplitTile>,
    /// Partial-state slots the items use (`0..num_partials`).
    pub num_partials: usize,
}

impl AttentionPlan {
    pub fn item_words(&self) -> Vec<u32> {
        self.items.iter().flat_map(|i| i.words()).collect()
    }

    pub fn split_words(&self) -> Vec<u32> {
        self.splits.iter().flat_map(|s| s.words()).collect()
    }
}

/// A tile before partitioning: its item with the full KV range.
struct Tile(WorkItem);

/// Plans the batch. `meta` must be validated, and every count must fit in
/// u32 (the caller checks the token count; positions are u32 already).
pub(crate) fn plan(meta: &AttentionMetadata, shape: &PlanShape) -> AttentionPlan {
    let tiles = tiles(meta, shape);
    let total_kv: usize = tiles
        .iter()
        .map(|t| t.0.kv_hi as usize - t.0.kv_lo as usize)
        .sum();
    let split = tiles.len() < shape.target_items;
    let target_span = total_kv.div_ceil(shape.target_items.max(1)).max(1);
    let mut plan = AttentionPlan::default();
    for Tile(item) in tiles {
        let (lo, hi) = (item.kv_lo as usize, item.kv_hi as usize);
        let span = hi - lo;
        let parts = if split {
            span.div_ceil(target_span)
                .min(span / MIN_PARTITION_TOKENS)
                .max(1)
        } else {
            1
        };
        if parts == 1 {
            plan.items.push(item);
            continue;
        }
        let first_partial = plan.num_partials as u32;
        for p in 0..parts {
            plan.items.push(WorkItem {
                kv_lo: (lo + span * p / parts) as u32,
                kv_hi: (lo + span * (p + 1) / parts) as u32,
                partial: first_partial + p as u32,
                ..item
            });
        }
        plan.splits.push(SplitTile {
            kv_head: item.kv_head,
            head_lo: item.head_lo,
            num_heads: item.num_heads,
            q_start: item.q_start,
            num_tokens: item.num_tokens,
            first_partial,
            num_partials: parts as u32,
        });
        plan.num_partials += parts;
    }
    plan
}

fn tiles(meta: &AttentionMetadata, shape: &PlanShape) -> Vec<Tile> {
    let heads_per_tile = shape.group.min(shape.rows_per_item).max(1);
    let tokens_per_tile = (shape.rows_per_item / heads_per_tile).max(1);
    let mut tiles = Vec::new();
    for seq in 0..meta.num_seqs() {
        let rows = meta.query_range(seq);
        let seq_first_pos = meta.context_lens[seq] as usize - rows.len();
        for start in rows.clone().step_by(tokens_per_tile) {
            let num_tokens = tokens_per_tile.min(rows.end - start);
            let first_pos = seq_first_pos + (start - rows.start);
            let kv_lo = shape
                .sliding_window
                .map_or(0, |w| (first_pos + 1).saturating_sub(w));
            let kv_hi = first_pos + num_tokens;
            for kv_head in 0..shape.num_kv_heads {
                for head_lo in (0..shape.group).step_by(heads_per_tile) {
                    tiles.push(Tile(WorkItem {
                        seq: seq as u32,
                        kv_head: kv_head as u32,
                        head_lo: head_lo as u32,
                        num_heads: heads_per_tile.min(shape.group - head_lo) as u32,
                        q_start: start as u32,
                        num_tokens: num_tokens as u32,
                        first_pos: first_pos as u32,
                        kv_lo: kv_lo as u32,
                        kv_hi: kv_hi as u32,
                        partial: NO_PARTIAL,
                    }));
                }
            }
        }
    }
    tiles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(group: usize, rows: usize, window: Option<usize>, target: usize) -> PlanShape {
        PlanShape {
            num_kv_heads: 2,
            group,
            rows_per_item: rows,
            sliding_window: window,
            target_items: target,
        }
    }

    /// For every query vector (token, head): the KV positions its items read
    /// and it may see, which must be exactly its visible range, each
    /// position once; and items stay within their tile size.
    fn check_coverage(m: &AttentionMetadata, s: &PlanShape, p: &AttentionPlan) {
        let num_tokens = *m.query_start_loc.last().unwrap() as usize;
        let num_heads = s.num_kv_heads * s.group;
        let mut seen = vec![Vec::<usize>::new(); num_tokens * num_heads];
        let mut direct = vec![0usize; num_tokens * num_heads];
        for it in &p.items {
            assert!((it.num_tokens * it.num_heads) as usize <= s.rows_per_item);
            assert!((it.head_lo + it.num_heads) as usize <= s.group);
            for t in 0..it.num_tokens {
                let token = (it.q_start + t) as usize;
                let pos = (it.first_pos + t) as usize;
                let lo = s.sliding_window.map_or(0, |w| (pos + 1).saturating_sub(w));
                for h in it.head_lo..it.head_lo + it.num_heads {
                    let head = it.kv_head as usize * s.group + h as usize;
                    let keys = (it.kv_lo as usize).max(lo)..(it.kv_hi as usize).min(pos + 1);
                    seen[token * num_heads + head].extend(keys);
                    if it.partial == NO_PARTIAL {
                        direct[token * num_heads + head] += 1;
                    }
                }
            }
        }
        let mut merged = vec![0usize; num_tokens * num_heads];
        for st in &p.splits {
            for t in 0..st.num_tokens {
                for h in st.head_lo..st.head_lo + st.num_heads {
                    let head = st.kv_head as usize * s.group + h as usize;
                    merged[(st.q_start + t) as usize * num_heads + head] += 1;
                }
            }
        }
        for seq in 0..m.num_seqs() {
            let rows = m.query_range(seq);
            let first = m.context_lens[seq] as usize - rows.len();
            for (j, token) in rows.enumerate() {
                let pos = first + j;
                let lo = s.sliding_window.map_or(0, |w| (pos + 1).saturating_sub(w));
                for head in 0..num_heads {
                    let i = token * num_heads + head;
                    let mut keys = seen[i].clone();
                    keys.sort_unstable();
                    assert_eq!(
                        keys,
                        (lo..=pos).collect::<Vec<_>>(),
                        "token {token} head {head}"
                    );
                    assert_eq!(
                        direct[i] + merged[i],
                        1,
                        "token {token} head {head} written once"
                    );
                }
            }
        }
        let slots: usize = p.splits.iter().map(|s| s.num_partials as usize).sum();
        assert_eq!(slots, p.num_partials);
    }

    #[test]
    fn mixed_batch_is_covered_once_with_and_without_partitions() {
        let m = AttentionMetadata::from_lens(&[40, 1, 17, 1, 64, 1], &[300, 1, 1000, 2048, 64, 17]);
        for (group, rows) in [(7, 32), (1, 32), (8, 32), (16, 16), (32, 16), (4, 64)] {
            for window in [None, Some(1), Some(100), Some(4096)] {
                for target in [1, 64, 100_000] {
                    let s = shape(group, rows, window, target);
                    check_coverage(&m, &s, &plan(&m, &s));
                }
            }
        }
    }

    #[test]
    fn tiles_pack_tokens_and_split_wide_groups() {
        let m = AttentionMetadata::from_lens(&[10], &[40]);
        // group 7 in 32 rows: 4 tokens per item -> items of 4, 4, 2 tokens per KV head.
        let p = plan(&m, &shape(7, 32, None, 1));
        assert_eq!(p.items.len(), 6);
        assert_eq!((p.items[0].q_start, p.items[0].num_tokens), (0, 4));
        assert_eq!((p.items[0].kv_lo, p.items[0].kv_hi), (0, 34));
        assert_eq!(p.items[0].first_pos, 30);
        // group 32 in 16 rows: one token, heads 0..16 and 16..32.
        let p = plan(&m, &shape(32, 16, None, 1));
        assert_eq!(p.items.len(), 10 * 2 * 2);
        assert_eq!((p.items[1].head_lo, p.items[1].num_heads), (16, 16));
    }

    #[test]
    fn lone_long_decode_is_partitioned_but_short_or_wide_batches_are_not() {
        let s = shape(7, 32, None, 264);
        let p = plan(&AttentionMetadata::from_lens(&[1], &[8192]), &s);
        assert!(p.items.len() > 2 && p.splits.len() == 2);
        for it in &p.items {
            assert_ne!(it.partial, NO_PARTIAL);
            assert!(it.kv_hi - it.kv_lo >= MIN_PARTITION_TOKENS as u32);
        }
        assert!(plan(&AttentionMetadata::from_lens(&[1], &[300]), &s)
            .splits
            .is_empty());
        let many = vec![1; 200];
        assert!(plan(&AttentionMetadata::from_lens(&many, &[4096; 200]), &s)
            .splits
            .is_empty());
    }

    #[test]
    fn sliding_window_starts_the_kv_range_at_the_window() {
        let p = plan(
            &AttentionMetadata::from_lens(&[1], &[100]),
            &shape(7, 32, Some(20), 1),
        );
        assert_eq!((p.items[0].kv_lo, p.items[0].kv_hi), (80, 100));
    }
}
