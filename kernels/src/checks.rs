//! Input checks shared by the ops, done on metadata before any storage is
//! locked, plus the strided row view the ops read q/k/v through.

use crate::arena::HostArena;
use crate::error::KernelError;
use crate::layout::KvCacheLayout;
use candle_core::{DType, Layout, Tensor};

/// Checks `arena` is a supported dtype, holds exactly `layout`'s elements,
/// and that `layer` exists.
pub(crate) fn check_arena(
    op: &'static str,
    arena: &HostArena,
    layout: &KvCacheLayout,
    layer: usize,
) -> Result<(), KernelError> {
    layout.validate()?;
    if !matches!(arena.dtype(), DType::F32 | DType::BF16 | DType::F16) {
        return Err(KernelError::UnsupportedDtype {
            op,
            dtype: arena.dtype(),
        });
    }
    let shape = layout.shape();
    let expected: usize = shape.iter().product();
    if arena.len_elems() != expected {
        return Err(KernelError::ShapeMismatch {
            op,
            what: "arena",
            expected: format!("{shape:?} ({expected} elements)"),
            got: vec![arena.len_elems()],
        });
    }
    if layer >= layout.num_layers {
        return Err(KernelError::LayerOutOfRange {
            op,
            layer,
            num_layers: layout.num_layers,
        });
    }
    Ok(())
}

/// Checks `t` has the arena's dtype.
pub(crate) fn check_dtype(
    op: &'static str,
    what: &'static str,
    t: &Tensor,
    arena: &HostArena,
) -> Result<(), KernelError> {
    if t.dtype() != arena.dtype() {
        return Err(KernelError::DtypeMismatch {
            op,
            what,
            expected: arena.dtype(),
            got: t.dtype(),
        });
    }
    Ok(())
}

pub(crate) fn check_dims(
    op: &'static str,
    what: &'static str,
    got: &[usize],
    expected: &[usize],
) -> Result<(), KernelError> {
    if got != expected {
        return Err(KernelError::ShapeMismatch {
            op,
            what,
            expected: format!("{expected:?}"),
            got: got.to_vec(),
        });
    }
    Ok(())
}

/// Checks `slot_mapping` has one entry per token and each is -1 (skip) or
/// a slot of the arena.
pub(crate) fn check_slot_mapping(
    slot_mapping: &[i64],
    num_tokens: usize,
    layout: &KvCacheLayout,
) -> Result<(), KernelError> {
    if slot_mapping.len() != num_tokens {
        return Err(KernelError::SlotMappingLength {
            expected: num_tokens,
            got: slot_mapping.len(),
        });
    }
    let num_slots = layout.num_slots();
    if let Some((token, &slot)) = slot_mapping
        .iter()
        .enumerate()
        .find(|(_, &s)| s != -1 && (s < 0 || s as u64 >= num_slots as u64))
    {
        return Err(KernelError::SlotOutOfRange {
            token,
            slot,
            num_slots,
        });
    }
    Ok(())
}

/// A rank-3 `[tokens, heads, head_dim]` tensor read row by row. Any strides
/// are fine as long as each `head_dim` row is contiguous, so views such as
/// `qkv.narrow(1, ..)` need no copy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowView {
    start: usize,
    token_stride: usize,
    head_stride: usize,
    head_dim: usize,
}

impl RowView {
    pub(crate) fn new(
        op: &'static str,
        what: &'static str,
        l: &Layout,
    ) -> Result<Self, KernelError> {
        let (dims, strides) = (l.dims(), l.stride());
        if dims.len() != 3 || (dims[2] > 1 && strides[2] != 1) {
            return Err(KernelError::BadStrides {
                op,
                what,
                requirement: "rank 3 with a contiguous last dimension",
            });
        }
        Ok(Self {
            start: l.start_offset(),
            token_stride: strides[0],
            head_stride: strides[1],
            head_dim: dims[2],
        })
    }

    /// Storage range of the `head_dim` row at `[token, head, ..]`.
    #[inline]
    pub(crate) fn row(&self, token: usize, head: usize) -> std::ops::Range<usize> {
        let s = self.start + token * self.token_stride + head * self.head_stride;
        s..s + self.head_dim
    }
}
