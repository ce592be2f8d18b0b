//! The layout handshake: two workers may exchange KV blocks only if they cut
//! their caches the same way. A block is opaque bytes to the transport, so a
//! mismatch would not fail a transfer — it would silently corrupt attention.

use crate::error::{Result, TransportError};

/// What a KV block contains, as both sides of a transfer must agree on.
///
/// The engine's arena is `[num_blocks][num_layers][2][block_size][num_kv_heads][head_dim]`;
/// `num_blocks` may differ between workers, everything here may not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutDescriptor {
    /// Model identity (e.g. the served model name or checkpoint hash).
    pub model_id: String,
    /// Element type of the cache, e.g. "bf16", "f16", "f32".
    pub dtype: String,
    /// Tokens per block.
    pub block_size: u32,
    /// Transformer layers.
    pub num_layers: u32,
    /// Key/value heads per layer.
    pub num_kv_heads: u32,
    /// Elements per head.
    pub head_dim: u32,
}

impl LayoutDescriptor {
    /// Bytes per element for the dtypes the engine uses, `None` otherwise.
    pub fn dtype_bytes(&self) -> Option<u64> {
        match self.dtype.as_str() {
            "f32" | "F32" | "float32" => Some(4),
            "f16" | "F16" | "bf16" | "BF16" | "float16" | "bfloat16" => Some(2),
            "u8" | "U8" | "f8e4m3" | "fp8" => Some(1),
            _ => None,
        }
    }

    /// Bytes of one block (`num_layers * 2 * block_size * num_kv_heads * head_dim * dtype`),
    /// when the dtype is known and the product fits.
    pub fn block_bytes(&self) -> Option<u64> {
        [
            self.num_layers,
            2,
            self.block_size,
            self.num_kv_heads,
            self.head_dim,
        ]
        .iter()
        .try_fold(self.dtype_bytes()?, |acc, &x| acc.checked_mul(u64::from(x)))
    }

    /// `Ok` when `remote` describes the same block contents; otherwise an
    /// error naming the first field that differs.
    pub fn check_matches(&self, remote: &LayoutDescriptor) -> Result<()> {
        let fields: [(&'static str, String, String); 6] = [
            ("model_id", self.model_id.clone(), remote.model_id.clone()),
            ("dtype", self.dtype.clone(), remote.dtype.clone()),
            (
                "block_size",
                self.block_size.to_string(),
                remote.block_size.to_string(),
            ),
            (
                "num_layers",
                self.num_layers.to_string(),
                remote.num_layers.to_string(),
            ),
            (
                "num_kv_heads",
                self.num_kv_heads.to_string(),
                remote.num_kv_heads.to_string(),
            ),
            (
                "head_dim",
                self.head_dim.to_string(),
                remote.head_dim.to_string(),
            ),
        ];
        match fields.into_iter().find(|(_, l, r)| l != r) {
            None => Ok(()),
            Some((field, local, remote)) => Err(TransportError::LayoutMismatch {
                field,
                local,
                remote,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> LayoutDescriptor {
        LayoutDescriptor {
            model_id: "qwen2.5-0.5b".into(),
            dtype: "bf16".into(),
            block_size: 16,
            num_layers: 24,
            num_kv_heads: 2,
            head_dim: 64,
        }
    }

    #[test]
    fn equal_layouts_match() {
        layout().check_matches(&layout()).unwrap();
    }

    #[test]
    fn each_field_is_named() {
        type Change = fn(&mut LayoutDescriptor);
        let cases: [(&str, Change); 6] = [
            ("model_id", |l| l.model_id = "llama".into()),
            ("dtype", |l| l.dtype = "f32".into()),
            ("block_size", |l| l.block_size = 32),
            ("num_layers", |l| l.num_layers = 12),
            ("num_kv_heads", |l| l.num_kv_heads = 4),
            ("head_dim", |l| l.head_dim = 128),
        ];
        for (name, change) in cases {
            let mut other = layout();
            change(&mut other);
            match layout().check_matches(&other) {
                Err(TransportError::LayoutMismatch { field, .. }) => assert_eq!(field, name),
                r => panic!("{name}: expected a mismatch, got {r:?}"),
            }
        }
    }

    #[test]
    fn block_bytes_follows_the_arena_shape() {
        assert_eq!(layout().block_bytes(), Some(24 * 2 * 16 * 2 * 64 * 2));
        let mut odd = layout();
        odd.dtype = "q4".into();
        assert_eq!(odd.block_bytes(), None);
    }
}
