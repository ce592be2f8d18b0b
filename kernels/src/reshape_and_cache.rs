//! Writes one layer's new K and V rows into their arena slots: the paged
//! equivalent of appending to a dense KV cache.

use crate::arena::HostArena;
use crate::checks::{check_arena, check_dims, check_dtype, check_slot_mapping, RowView};
use crate::element::Element;
use crate::error::KernelError;
use crate::layout::{KvCacheLayout, K, V};
use candle_core::{CpuStorage, DType, Storage, Tensor};
use half::{bf16, f16};

const OP: &str = "reshape_and_cache";

/// Copies `k[t]` and `v[t]` (`[num_tokens, num_kv_heads, head_dim]` CPU
/// tensors, the arena's dtype) into slot `slot_mapping[t]` of `layer`; slot
/// `-1` skips the token (e.g. a prefix-cache hit already in place). Every
/// slot is checked before anything is written, so a bad slot leaves the
/// arena untouched.
pub fn reshape_and_cache(
    arena: &HostArena,
    k: &Tensor,
    v: &Tensor,
    layout: &KvCacheLayout,
    layer: usize,
    slot_mapping: &[i64],
) -> candle_core::Result<()> {
    check_arena(OP, arena, layout, layer)?;
    check_dtype(OP, "k", k, arena)?;
    check_dtype(OP, "v", v, arena)?;
    let num_tokens = k.dims().first().copied().unwrap_or(0);
    let expected = [num_tokens, layout.num_kv_heads, layout.head_dim];
    check_dims(OP, "k", k.dims(), &expected)?;
    check_dims(OP, "v", v.dims(), &expected)?;
    check_slot_mapping(slot_mapping, num_tokens, layout)?;
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cpu(ks), Storage::Cpu(vs)) = (&*ks, &*vs) else {
        return Err(KernelError::NotOnCpu {
            op: OP,
            what: "k and v",
        }
        .into());
    };
    let op = ReshapeAndCache {
        layout: *layout,
        layer,
        slot_mapping,
    };
    let k = (ks, RowView::new(OP, "k", kl)?);
    let v = (vs, RowView::new(OP, "v", vl)?);
    match arena.dtype() {
        DType::F32 => op.run::<f32>(arena, k, v),
        DType::BF16 => op.run::<bf16>(arena, k, v),
        _ => op.run::<f16>(arena, k, v),
    }
}

struct ReshapeAndCache<'a> {
    layout: KvCacheLayout,
    layer: usize,
    slot_mapping: &'a [i64],
}

impl ReshapeAndCache<'_> {
    fn run<E: Element>(
        &self,
        arena: &HostArena,
        (k, kview): (&CpuStorage, RowView),
        (v, vview): (&CpuStorage, RowView),
    ) -> candle_core::Result<()> {
        let dtype_err = || KernelError::UnsupportedDtype {
            op: OP,
            dtype: E::DTYPE,
        };
        let k = E::slice(k).ok_or_else(dtype_err)?;
        let v = E::slice(v).ok_or_else(dtype_err)?;
        let l = &self.layout;
        for (token, &slot) in self.slot_mapping.iter().enumerate() {
            if slot < 0 {
                continue;
            }
            let (block, offset) = (slot as usize / l.block_size, slot as usize % l.block_size);
            for head in 0..l.num_kv_heads {
                for (kv, src, view) in [(K, k, kview), (V, v, vview)] {
                    let dst = l.elem_offset(block, self.layer, kv, offset, head);
                    // SAFETY: the row is in a block of a sequence this
                    // step runs, which only the engine thread touches
                    // (HostArena's aliasing rule); no other view of the
                    // arena is alive during this call, and the row is
                    // dropped before the next one is made.
                    let row = unsafe { arena.row_mut::<E>(dst, l.head_dim) };
                    row.copy_from_slice(&src[view.row(token, head)]);
                }
            }
        }
        Ok(())
    }
}
