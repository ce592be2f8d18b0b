//! Geometry of the KV arena: `[num_blocks, num_layers, 2 (K,V), block_size,
//! num_kv_heads, head_dim]`, block-major so one block (every layer's K and V)
//! is one contiguous region and moves in one transfer descriptor.

use crate::error::KernelError;

/// Index of the K half in the arena's third dimension.
pub const K: usize = 0;
/// Index of the V half in the arena's third dimension.
pub const V: usize = 1;

/// Shape of a worker's KV arena. Prefill and decode workers must agree on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvCacheLayout {
    pub num_blocks: usize,
    pub num_layers: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl KvCacheLayout {
    /// The arena tensor's shape.
    pub fn shape(&self) -> [usize; 6] {
        [
            self.num_blocks,
            self.num_layers,
            2,
            self.block_size,
            self.num_kv_heads,
            self.head_dim,
        ]
    }

    /// Elements in one block: every layer's K and V for `block_size` tokens.
    pub fn block_elems(&self) -> usize {
        self.num_layers * self.layer_elems()
    }

    /// Offset (in elements) of the `head_dim` vector at
    /// `[block, layer, kv, slot, kv_head, ..]`. `kv` is [`K`] (0) or [`V`] (1).
    pub fn elem_offset(
        &self,
        block: usize,
        layer: usize,
        kv: usize,
        slot: usize,
        kv_head: usize,
    ) -> usize {
        block * self.block_elems()
            + layer * self.layer_elems()
            + kv * self.half_elems()
            + slot * self.slot_stride()
            + kv_head * self.head_dim
    }

    /// Elements of one layer inside a block (K and V).
    pub(crate) fn layer_elems(&self) -> usize {
        2 * self.half_elems()
    }

    /// Elements of one layer's K (or V) inside a block.
    pub(crate) fn half_elems(&self) -> usize {
        self.block_size * self.slot_stride()
    }

    /// Distance between the same head's vectors of consecutive slots.
    pub(crate) fn slot_stride(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Total token slots in the arena (`num_blocks * block_size`).
    pub(crate) fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Checks every dimension is non-zero and the element count fits in
    /// `usize`, so the offset arithmetic above cannot overflow afterwards.
    pub(crate) fn validate(&self) -> Result<(), KernelError> {
        let fields = [
            ("num_blocks", self.num_blocks),
            ("num_layers", self.num_layers),
            ("block_size", self.block_size),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(KernelError::EmptyLayoutDim { field });
        }
        let shape = self.shape();
        shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or(KernelError::LayoutTooLarge { shape })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_row_major_strides_of_shape() {
        let l = KvCacheLayout {
            num_blocks: 3,
            num_layers: 4,
            block_size: 5,
            num_kv_heads: 2,
            head_dim: 7,
        };
        let s = l.shape();
        let idx = |b: usize, la: usize, kv: usize, sl: usize, h: usize| {
            ((((b * s[1] + la) * s[2] + kv) * s[3] + sl) * s[4] + h) * s[5]
        };
        for (b, la, kv, sl, h) in [
            (0, 0, 0, 0, 0),
            (2, 3, 1, 4, 1),
            (1, 2, 0, 3, 0),
            (2, 0, 1, 0, 1),
        ] {
            assert_eq!(l.elem_offset(b, la, kv, sl, h), idx(b, la, kv, sl, h));
        }
        assert_eq!(l.block_elems(), s[1..].iter().product::<usize>());
    }

    #[test]
    fn validate_rejects_zero_dims_and_overflow() {
        let ok = KvCacheLayout {
            num_blocks: 1,
            num_layers: 1,
            block_size: 1,
            num_kv_heads: 1,
            head_dim: 1,
        };
        assert!(ok.validate().is_ok());
        let zero = KvCacheLayout { head_dim: 0, ..ok };
        assert_eq!(
            zero.validate(),
            Err(KernelError::EmptyLayoutDim { field: "head_dim" })
        );
        let huge = KvCacheLayout {
            num_blocks: usize::MAX / 2,
            num_layers: 4,
            ..ok
        };
        assert!(matches!(
            huge.validate(),
            Err(KernelError::LayoutTooLarge { .. })
        ));
    }
}
