//! Public entry point of paged attention: checks every input, then runs the
//! CPU kernel as a candle `CustomOp1` on `q`, reading the arena directly.

use crate::arena::HostArena;
use crate::checks::{check_arena, check_dtype, RowView};
use crate::cpu::{self, Inputs};
use crate::element::Element;
use crate::error::KernelError;
use crate::layout::KvCacheLayout;
use crate::metadata::AttentionMetadata;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use half::{bf16, f16};

const OP: &str = "paged_attention";

/// Causal attention of `q` (`[num_tokens, num_heads, head_dim]`, a CPU
/// tensor of the arena's
/// dtype, `num_heads` a multiple of `num_kv_heads`) over the cached K/V of
/// `layer`, for the mixed batch `meta` describes. Returns a tensor shaped and
/// typed like `q`. `sliding_window = Some(w)` lets the token at position `p`
/// see only positions `p - w + 1 ..= p`.
///
/// This step's K/V must already be in the arena ([`crate::reshape_and_cache`]).
pub fn paged_attention(
    q: &Tensor,
    arena: &HostArena,
    layout: &KvCacheLayout,
    layer: usize,
    meta: &AttentionMetadata,
    softmax_scale: f32,
    sliding_window: Option<usize>,
) -> candle_core::Result<Tensor> {
    check_arena(OP, arena, layout, layer)?;
    check_dtype(OP, "q", q, arena)?;
    let dims = q.dims();
    if dims.len() != 3 || dims[2] != layout.head_dim || dims[1] == 0 {
        let expected = format!("[num_tokens, num_heads, {}]", layout.head_dim);
        return Err(KernelError::ShapeMismatch {
            op: OP,
            what: "q",
            expected,
            got: dims.to_vec(),
        }
        .into());
    }
    if !dims[1].is_multiple_of(layout.num_kv_heads) {
        return Err(KernelError::HeadsNotMultiple {
            num_heads: dims[1],
            num_kv_heads: layout.num_kv_heads,
        }
        .into());
    }
    if !softmax_scale.is_finite() {
        return Err(KernelError::BadSoftmaxScale(softmax_scale).into());
    }
    if sliding_window == Some(0) {
        return Err(KernelError::ZeroSlidingWindow.into());
    }
    meta.validate(dims[0], layout)?;
    if !q.device().is_cpu() {
        return Err(KernelError::NotOnCpu { op: OP, what: "q" }.into());
    }
    let op = PagedAttention {
        arena,
        layout,
        layer,
        meta,
        softmax_scale,
        sliding_window,
    };
    q.apply_op1_no_bwd(&op)
}

struct PagedAttention<'a> {
    arena: &'a HostArena,
    layout: &'a KvCacheLayout,
    layer: usize,
    meta: &'a AttentionMetadata,
    softmax_scale: f32,
    sliding_window: Option<usize>,
}

impl PagedAttention<'_> {
    fn run<E: Element>(
        &self,
        q: &CpuStorage,
        ql: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dtype_err = || KernelError::UnsupportedDtype {
            op: OP,
            dtype: q.dtype(),
        };
        let (num_tokens, num_heads) = (ql.dims()[0], ql.dims()[1]);
        let inputs = Inputs {
            q: E::slice(q).ok_or_else(dtype_err)?,
            q_view: RowView::new(OP, "q", ql)?,
            // SAFETY: reads only; nothing writes the arena's blocks this
            // step reads while the kernel runs (HostArena's aliasing rule:
            // the engine thread is in this call, peers only read, incoming
            // transfers only write blocks of loading sequences, which no
            // batch contains). `check_dtype` made q's dtype the arena's.
            arena: unsafe { self.arena.as_slice::<E>() },
            layout: self.layout,
            layer: self.layer,
            meta: self.meta,
            softmax_scale: self.softmax_scale,
            sliding_window: self.sliding_window,
            group: num_heads / self.layout.num_kv_heads,
        };
        let out = cpu::paged_attention(&inputs, num_tokens, num_heads);
        Ok((E::into_storage(out), ql.shape().clone()))
    }
}

impl CustomOp1 for PagedAttention<'_> {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, q: &CpuStorage, ql: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match q {
            CpuStorage::F32(_) => self.run::<f32>(q, ql),
            CpuStorage::BF16(_) => self.run::<bf16>(q, ql),
            CpuStorage::F16(_) => self.run::<f16>(q, ql),
            other => Err(KernelError::UnsupportedDtype {
                op: OP,
                dtype: other.dtype(),
            }
            .into()),
        }
    }
}
