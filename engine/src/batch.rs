//! One forward step's inputs, as plain data: the flattened tokens of every
//! scheduled sequence, their positions, the paged-attention metadata and which
//! rows need logits.

use tandem_kernels::AttentionMetadata;

use crate::kv_cache::BlockId;

#[derive(Clone, Debug, Default)]
pub struct ForwardBatch {
    pub token_ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub attn: AttentionMetadata,
    /// Rows of the batch whose logits are computed (usually each sequence's last).
    pub logits_indices: Vec<u32>,
}

/// One sequence's share of a step: `tokens` are its new tokens, which sit at
/// positions `start..start + tokens.len()` of its context.
pub struct SeqChunk<'a> {
    pub tokens: &'a [u32],
    pub start: usize,
    pub block_table: &'a [BlockId],
    /// Whether the step needs logits for the chunk's last token.
    pub wants_logits: bool,
    /// Logits for every token of the chunk (parity tests, prompt logprobs).
    pub all_logits: bool,
}

impl ForwardBatch {
    /// Flattens `chunks` into one varlen batch over blocks of `block_size`.
    pub fn build(chunks: &[SeqChunk<'_>], block_size: usize) -> Self {
        let mut b = ForwardBatch::default();
        let max_blocks = chunks
            .iter()
            .map(|c| c.block_table.len())
            .max()
            .unwrap_or(0);
        b.attn.max_blocks_per_seq = max_blocks;
        b.attn.query_start_loc.push(0);
        for c in chunks {
            let first_row = b.token_ids.len();
            for (i, &t) in c.tokens.iter().enumerate() {
                let pos = c.start + i;
                b.token_ids.push(t);
                b.positions.push(pos as u32);
                let block = c.block_table[pos / block_size].0 as i64;
                b.attn
                    .slot_mapping
                    .push(block * block_size as i64 + (pos % block_size) as i64);
            }
            let rows = b.token_ids.len();
            b.attn.query_start_loc.push(rows as u32);
            b.attn.context_lens.push((c.start + c.tokens.len()) as u32);
            b.attn
                .block_tables
                .extend(c.block_table.iter().map(|b| b.0));
            b.attn
                .block_tables
                .extend(std::iter::repeat_n(0, max_blocks - c.block_table.len()));
            if c.all_logits {
                b.logits_indices.extend(first_row as u32..rows as u32);
            } else if c.wants_logits && rows > first_row {
                b.logits_indices.push(rows as u32 - 1);
            }
        }
        b
    }
}
