//! Writes one layer's new K and V rows into their arena slots: the paged
//! equivalent of appending to a dense KV cache.

use crate::checks::{
    arena_range, check_arena, check_dims, check_dtype, check_slot_mapping, RowView,
};
use crate::element::Element;
use crate::error::KernelError;
use crate::layout::{KvCacheLayout, K, V};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp3, Layout, Tensor};
use half::{bf16, f16};

const OP: &str = "reshape_and_cache";

/// Copies `k[t]` and `v[t]` (`[num_tokens, num_kv_heads, head_dim]`, the
/// arena's dtype) into slot `slot_mapping[t]` of `layer`; slot `-1` skips the
/// token (e.g. a prefix-cache hit already in place). Every slot is checked
/// before anything is written, so a bad slot leaves the arena untouched.
pub fn reshape_and_cache(
    arena: &Tensor,
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
    arena.inplace_op3(
        k,
        v,
        &ReshapeAndCache {
            layout: *layout,
            layer,
            slot_mapping,
        },
    )
}

struct ReshapeAndCache<'a> {
    layout: KvCacheLayout,
    layer: usize,
    slot_mapping: &'a [i64],
}

impl ReshapeAndCache<'_> {
    fn write<E: Element>(&self, arena: &mut [E], k: (&[E], RowView), v: (&[E], RowView)) {
        let l = &self.layout;
        for (token, &slot) in self.slot_mapping.iter().enumerate() {
            if slot < 0 {
                continue;
            }
            let (block, offset) = (slot as usize / l.block_size, slot as usize % l.block_size);
            for head in 0..l.num_kv_heads {
                for (kv, (src, view)) in [(K, k), (V, v)] {
                    let dst = l.elem_offset(block, self.layer, kv, offset, head);
                    arena[dst..dst + l.head_dim].copy_from_slice(&src[view.row(token, head)]);
                }
            }
        }
    }

    fn run<E: Element>(
        &self,
        a: &mut CpuStorage,
        al: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let range = arena_range(OP, al)?;
        let kview = RowView::new(OP, "k", kl)?;
        let vview = RowView::new(OP, "v", vl)?;
        let dtype_err = || KernelError::UnsupportedDtype {
            op: OP,
            dtype: k.dtype(),
        };
        let (k, v) = (
            E::slice(k).ok_or_else(dtype_err)?,
            E::slice(v).ok_or_else(dtype_err)?,
        );
        let arena = E::slice_mut(a).ok_or_else(dtype_err)?;
        self.write(&mut arena[range], (k, kview), (v, vview));
        Ok(())
    }
}

impl InplaceOp3 for ReshapeAndCache<'_> {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        a: &mut CpuStorage,
        al: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        match a {
            CpuStorage::F32(_) => self.run::<f32>(a, al, k, kl, v, vl),
            CpuStorage::BF16(_) => self.run::<bf16>(a, al, k, kl, v, vl),
            CpuStorage::F16(_) => self.run::<f16>(a, al, k, kl, v, vl),
            other => Err(KernelError::UnsupportedDtype {
                op: OP,
                dtype: other.dtype(),
            }
            .into()),
        }
    }
}
