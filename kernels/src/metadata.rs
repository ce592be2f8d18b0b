//! Per-step description of one mixed varlen batch: prefill chunks and decode
//! tokens side by side, no padding. The scheduler fills it; the kernels only
//! read it, after [`AttentionMetadata::validate`] has proven every index safe.

use crate::error::KernelError;
use crate::layout::KvCacheLayout;
use std::ops::Range;

/// Metadata for one batched forward.
///
/// The query tokens of seq `i` are the *last* `query_len` tokens of its
/// context: token `j` of the chunk sits at absolute position
/// `context_len - query_len + j` and attends causally to cache positions
/// `0..=` that position. Decode is `query_len == 1`; a prefill chunk has
/// `query_len > 1`, possibly behind earlier cached blocks (prefix hits or
/// earlier chunks).
#[derive(Clone, Debug, Default)]
pub struct AttentionMetadata {
    /// `num_seqs + 1` entries; seq `i` owns q rows
    /// `query_start_loc[i]..query_start_loc[i + 1]`. May be empty for an empty batch.
    pub query_start_loc: Vec<u32>,
    /// Per seq: tokens in the cache *including* this step's new tokens.
    pub context_lens: Vec<u32>,
    /// Flattened `[num_seqs * max_blocks_per_seq]`; only the first
    /// `ceil(context_len / block_size)` entries of a row are read.
    pub block_tables: Vec<u32>,
    pub max_blocks_per_seq: usize,
    /// Per new token: `block_id * block_size + offset_in_block`; -1 = do not write.
    pub slot_mapping: Vec<i64>,
}

impl AttentionMetadata {
    pub fn num_seqs(&self) -> usize {
        self.context_lens.len()
    }

    /// Rows of q (and of the output) that belong to seq `i`.
    pub fn query_range(&self, i: usize) -> Range<usize> {
        self.query_start_loc[i] as usize..self.query_start_loc[i + 1] as usize
    }

    /// The block table row of seq `i`.
    pub fn block_table(&self, i: usize) -> &[u32] {
        let w = self.max_blocks_per_seq;
        &self.block_tables[i * w..(i + 1) * w]
    }

    /// Checks the metadata against a batch of `num_tokens` query rows and the
    /// arena `layout`: lengths agree, `query_start_loc` is a monotone
    /// partition of `0..num_tokens`, each context fits its block table and
    /// holds its query, and every block id that will be read exists.
    pub fn validate(&self, num_tokens: usize, layout: &KvCacheLayout) -> Result<(), KernelError> {
        let num_seqs = self.num_seqs();
        let empty_batch = num_seqs == 0 && self.query_start_loc.is_empty();
        if !empty_batch && self.query_start_loc.len() != num_seqs + 1 {
            return Err(KernelError::MetadataLength {
                field: "query_start_loc",
                expected: num_seqs + 1,
                got: self.query_start_loc.len(),
            });
        }
        self.validate_query_start_loc(num_tokens, empty_batch)?;
        let table_len = num_seqs.saturating_mul(self.max_blocks_per_seq);
        if self.block_tables.len() != table_len {
            return Err(KernelError::MetadataLength {
                field: "block_tables (num_seqs * max_blocks_per_seq)",
                expected: table_len,
                got: self.block_tables.len(),
            });
        }
        let capacity = self.max_blocks_per_seq.saturating_mul(layout.block_size);
        for seq in 0..num_seqs {
            let context_len = self.context_lens[seq] as usize;
            let query_len = self.query_range(seq).len();
            if query_len > context_len {
                return Err(KernelError::QueryLongerThanContext {
                    seq,
                    query_len,
                    context_len,
                });
            }
            if context_len > capacity {
                return Err(KernelError::ContextTooLong {
                    seq,
                    context_len,
                    capacity,
                    max_blocks_per_seq: self.max_blocks_per_seq,
                    block_size: layout.block_size,
                });
            }
            let used = context_len.div_ceil(layout.block_size);
            let table = &self.block_table(seq)[..used];
            if let Some((index, &block)) = table
                .iter()
                .enumerate()
                .find(|(_, &b)| b as usize >= layout.num_blocks)
            {
                return Err(KernelError::BlockIdOutOfRange {
                    seq,
                    index,
                    block,
                    num_blocks: layout.num_blocks,
                });
            }
        }
        Ok(())
    }

    fn validate_query_start_loc(
        &self,
        num_tokens: usize,
        empty_batch: bool,
    ) -> Result<(), KernelError> {
        let bad = |reason: String| Err(KernelError::BadQueryStartLoc { reason });
        if empty_batch {
            return match num_tokens {
                0 => Ok(()),
                n => bad(format!("is empty (no sequences) but q has {n} rows")),
            };
        }
        let loc = &self.query_start_loc;
        if loc[0] != 0 {
            return bad(format!("must start at 0, starts at {}", loc[0]));
        }
        if let Some(i) = loc.windows(2).position(|w| w[1] < w[0]) {
            return bad(format!(
                "decreases at seq {i}: {} then {}",
                loc[i],
                loc[i + 1]
            ));
        }
        let last = *loc.last().expect("non-empty") as usize;
        if last != num_tokens {
            return bad(format!("ends at {last} but q has {num_tokens} rows"));
        }
        Ok(())
    }
}

#[cfg(test)]
impl AttentionMetadata {
    /// Metadata with only the query and context lengths set, as the
    /// attention planners' tests need it.
    pub(crate) fn from_lens(q_lens: &[u32], ctx: &[u32]) -> Self {
        let mut loc = vec![0];
        for q in q_lens {
            loc.push(loc.last().unwrap() + q);
        }
        Self {
            query_start_loc: loc,
            context_lens: ctx.to_vec(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> KvCacheLayout {
        KvCacheLayout {
            num_blocks: 4,
            num_layers: 1,
            block_size: 16,
            num_kv_heads: 1,
            head_dim: 8,
        }
    }

    fn meta() -> AttentionMetadata {
        AttentionMetadata {
            query_start_loc: vec![0, 3, 4],
            context_lens: vec![20, 1],
            block_tables: vec![3, 1, 2, 0],
            max_blocks_per_seq: 2,
            slot_mapping: vec![],
        }
    }

    #[test]
    fn accepts_good_metadata_and_empty_batch() {
        assert_eq!(meta().validate(4, &layout()), Ok(()));
        assert_eq!(AttentionMetadata::default().validate(0, &layout()), Ok(()));
    }

    #[test]
    fn rejects_each_kind_of_bad_metadata() {
        let l = layout();
        let err = |m: AttentionMetadata, n: usize| m.validate(n, &l).unwrap_err();
        assert!(matches!(
            err(meta(), 5),
            KernelError::BadQueryStartLoc { .. }
        ));
        let m = AttentionMetadata {
            query_start_loc: vec![1, 3, 4],
            ..meta()
        };
        assert!(matches!(err(m, 4), KernelError::BadQueryStartLoc { .. }));
        let m = AttentionMetadata {
            query_start_loc: vec![0, 5, 4],
            ..meta()
        };
        assert!(matches!(err(m, 4), KernelError::BadQueryStartLoc { .. }));
        let m = AttentionMetadata {
            query_start_loc: vec![0, 4],
            ..meta()
        };
        assert!(matches!(
            err(m, 4),
            KernelError::MetadataLength {
                field: "query_start_loc",
                ..
            }
        ));
        let m = AttentionMetadata {
            block_tables: vec![0; 3],
            ..meta()
        };
        assert!(matches!(err(m, 4), KernelError::MetadataLength { .. }));
        let m = AttentionMetadata {
            context_lens: vec![2, 1],
            ..meta()
        };
        assert!(matches!(
            err(m, 4),
            KernelError::QueryLongerThanContext { seq: 0, .. }
        ));
        let m = AttentionMetadata {
            context_lens: vec![33, 1],
            ..meta()
        };
        assert!(matches!(
            err(m, 4),
            KernelError::ContextTooLong { seq: 0, .. }
        ));
        let m = AttentionMetadata {
            block_tables: vec![3, 1, 4, 0],
            ..meta()
        };
        assert!(matches!(
            err(m, 4),
            KernelError::BlockIdOutOfRange {
                seq: 1,
                index: 0,
                block: 4,
                ..
            }
        ));
    }

    #[test]
    fn unused_block_table_entries_are_not_checked() {
        let m = AttentionMetadata {
            block_tables: vec![3, 1, 2, 999],
            ..meta()
        };
        assert_eq!(m.validate(4, &layout()), Ok(()));
    }
}
