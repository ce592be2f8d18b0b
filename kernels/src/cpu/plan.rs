//! Splits a batch into independent work items for rayon.
//!
//! A *tile* is a few query tokens of one sequence times the query heads of
//! one KV head: every K/V row it reads serves all of them, so GQA groups and
//! prefill tokens share each load. When tiles alone cannot keep the threads
//! busy (small decode batches over long contexts), a tile's KV blocks are
//! split into partitions whose partial softmax states are merged afterwards.

use crate::metadata::AttentionMetadata;
use std::ops::Range;

/// A tile holds about this many f32s per query-side buffer (query vectors x
/// head_dim: 64 query vectors at head_dim 64). Larger tiles reuse each K/V
/// block more; past this the buffers leave L1/L2 (measured on prefill).
const TILE_FLOATS: usize = 4096;
/// Aim for this many work items per thread so uneven ones even out.
const ITEMS_PER_THREAD: usize = 4;
/// A partition covers at least this many KV tokens: below that, merging
/// costs more than the parallelism gains.
const MIN_PARTITION_TOKENS: usize = 256;

/// Query tokens of one sequence against one KV head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tile {
    pub seq: usize,
    pub kv_head: usize,
    /// Rows of q (and of the output).
    pub q_rows: Range<usize>,
    /// Absolute position of the first query token.
    pub first_pos: usize,
    /// The items computing this tile, consecutive in [`Plan::items`].
    pub items: Range<usize>,
}

/// One parallel task: the KV blocks `blocks` (logical indices in the
/// sequence's block table) of tile `tile`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkItem {
    pub tile: usize,
    pub blocks: Range<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub tiles: Vec<Tile>,
    pub items: Vec<WorkItem>,
}

/// Geometry the planner needs besides the metadata.
pub(crate) struct PlanShape {
    pub num_kv_heads: usize,
    pub group: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub sliding_window: Option<usize>,
    pub threads: usize,
}

/// Plans the batch. `meta` must already be validated.
pub(crate) fn plan(meta: &AttentionMetadata, shape: &PlanShape) -> Plan {
    let tile_query_vectors = (TILE_FLOATS / shape.head_dim).max(8);
    let tokens_per_tile = (tile_query_vectors / shape.group).max(1);
    let mut tiles = Vec::new();
    let mut blocks = Vec::new();
    for seq in 0..meta.num_seqs() {
        let rows = meta.query_range(seq);
        let context_len = meta.context_lens[seq] as usize;
        let seq_first_pos = context_len - rows.len();
        for start in rows.clone().step_by(tokens_per_tile) {
            let q_rows = start..(start + tokens_per_tile).min(rows.end);
            let first_pos = seq_first_pos + (start - rows.start);
            let last_pos = first_pos + q_rows.len() - 1;
            let first_visible = shape
                .sliding_window
                .map_or(0, |w| (first_pos + 1).saturating_sub(w));
            let span = first_visible / shape.block_size..last_pos / shape.block_size + 1;
            for kv_head in 0..shape.num_kv_heads {
                tiles.push(Tile {
                    seq,
                    kv_head,
                    q_rows: q_rows.clone(),
                    first_pos,
                    items: 0..0,
                });
                blocks.push(span.clone());
            }
        }
    }
    let items = partition(&mut tiles, &blocks, shape);
    Plan { tiles, items }
}

/// Cuts each tile's block span into parts of roughly equal cost (blocks x
/// query vectors) so there are about `ITEMS_PER_THREAD` per thread.
fn partition(tiles: &mut [Tile], blocks: &[Range<usize>], shape: &PlanShape) -> Vec<WorkItem> {
    let cost = |t: &Tile, b: &Range<usize>| b.len() * t.q_rows.len();
    let total: usize = tiles.iter().zip(blocks).map(|(t, b)| cost(t, b)).sum();
    let target_cost = (total / (shape.threads * ITEMS_PER_THREAD).max(1)).max(1);
    let min_blocks = MIN_PARTITION_TOKENS.div_ceil(shape.block_size);
    let mut items = Vec::with_capacity(tiles.len());
    for (i, (tile, span)) in tiles.iter_mut().zip(blocks).enumerate() {
        let parts = cost(tile, span)
            .div_ceil(target_cost)
            .min(span.len() / min_blocks)
            .max(1);
        let first = items.len();
        for p in 0..parts {
            let lo = span.start + span.len() * p / parts;
            let hi = span.start + span.len() * (p + 1) / parts;
            items.push(WorkItem {
                tile: i,
                blocks: lo..hi,
            });
        }
        tile.items = first..items.len();
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(threads: usize, window: Option<usize>) -> PlanShape {
        PlanShape {
            num_kv_heads: 2,
            group: 7,
            head_dim: 128,
            block_size: 16,
            sliding_window: window,
            threads,
        }
    }

    fn covered_blocks(p: &Plan, tile: usize) -> Vec<usize> {
        p.items[p.tiles[tile].items.clone()]
            .iter()
            .flat_map(|i| i.blocks.clone())
            .collect()
    }

    #[test]
    fn prefill_tiles_cover_every_row_and_only_causal_blocks() {
        let p = plan(&AttentionMetadata::from_lens(&[10], &[40]), &shape(1, None));
        // 4096 / 128 = 32 query vectors, 32 / 7 = 4 tokens per tile -> tiles of 4, 4, 2 rows, for 2 KV heads.
        assert_eq!(p.tiles.len(), 6);
        assert_eq!(p.tiles[0].q_rows, 0..4);
        assert_eq!(p.tiles[0].first_pos, 30);
        assert_eq!(p.tiles[5].q_rows, 8..10);
        // Last tile holds positions 38, 39: blocks 0..=2.
        assert_eq!(covered_blocks(&p, 5), vec![0, 1, 2]);
    }

    #[test]
    fn sliding_window_skips_blocks_before_the_window() {
        let p = plan(
            &AttentionMetadata::from_lens(&[1], &[100]),
            &shape(1, Some(20)),
        );
        // Position 99 sees 80..=99: blocks 5 and 6.
        assert_eq!(covered_blocks(&p, 0), vec![5, 6]);
    }

    #[test]
    fn lone_long_decode_is_partitioned_and_covers_each_block_once() {
        let p = plan(
            &AttentionMetadata::from_lens(&[1], &[2048]),
            &shape(2, None),
        );
        assert!(p.items.len() > p.tiles.len());
        for t in 0..p.tiles.len() {
            assert_eq!(covered_blocks(&p, t), (0..128).collect::<Vec<_>>());
            for i in &p.items[p.tiles[t].items.clone()] {
                assert!(i.blocks.len() * 16 >= MIN_PARTITION_TOKENS);
            }
        }
    }

    #[test]
    fn big_batches_and_short_contexts_are_not_partitioned() {
        let p = plan(
            &AttentionMetadata::from_lens(&[1; 16], &[2048; 16]),
            &shape(2, None),
        );
        assert_eq!(p.items.len(), p.tiles.len());
        let p = plan(&AttentionMetadata::from_lens(&[1], &[100]), &shape(2, None));
        assert_eq!(p.items.len(), p.tiles.len());
    }
}
