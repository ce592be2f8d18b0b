//! Launch wrappers of the element-wise and per-row kernels. Each checks the
//! buffers it is given are long enough for every index the kernel derives
//! from the sizes, then launches on the kernels' stream (asynchronously).
//! Buffers may be longer than needed (preallocated for the largest batch).

use cudarc::driver::{CudaView, CudaViewMut, DriverError, LaunchArgs, LaunchConfig, PushKernelArg};

use super::device::{CudaElement, CudaKernels};
use super::error::CudaKernelError;

type Result<T> = std::result::Result<T, CudaKernelError>;

/// Checks `len >= needed` for buffer `what` of `op`.
pub(crate) fn need(op: &'static str, what: &'static str, len: usize, needed: usize) -> Result<()> {
    if len < needed {
        return Err(CudaKernelError::BufferTooSmall {
            op,
            what,
            needed,
            len,
        });
    }
    Ok(())
}

/// A size as the kernels' 32-bit index; grids are limited to 2^31 - 1
/// blocks, so that is the bound for every size.
pub(crate) fn index_u32(op: &'static str, what: &'static str, value: usize) -> Result<u32> {
    u32::try_from(value)
        .ok()
        .filter(|&v| v <= i32::MAX as u32)
        .ok_or(CudaKernelError::TooLarge { op, what, value })
}

/// `a * b`, or an error naming the product when it overflows.
pub(crate) fn product(op: &'static str, what: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or(CudaKernelError::TooLarge {
        op,
        what,
        value: usize::MAX,
    })
}

/// One block per row; enough 32-thread warps to give each thread about one
/// 16-byte word of a `row_elems` row (at most 1024 threads).
pub(crate) fn per_row(rows: u32, row_elems: usize, elem_bytes: usize) -> LaunchConfig {
    let words = (row_elems * elem_bytes).div_ceil(16);
    let threads = words.next_multiple_of(32).clamp(32, 1024) as u32;
    LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The sizes a row-wise norm passes its kernel: `rows` rows of `hidden`.
struct NormRows {
    rows: u32,
    hidden: u32,
}

/// Checks the buffers of a row-wise norm over `num_rows` rows of `hidden`
/// (each of `row_buffers`, in order, holds them all; `weight` holds one
/// row) and gives the kernel's sizes, or `None` when there is nothing to do.
fn norm_rows(
    op: &'static str,
    num_rows: usize,
    hidden: usize,
    row_buffers: &[(&'static str, usize)],
    weight_len: usize,
) -> Result<Option<NormRows>> {
    let elems = product(op, "num_rows * hidden", num_rows, hidden)?;
    for &(what, len) in row_buffers {
        need(op, what, len, elems)?;
    }
    need(op, "weight", weight_len, hidden)?;
    if elems == 0 {
        return Ok(None);
    }
    Ok(Some(NormRows {
        rows: index_u32(op, "num_rows", num_rows)?,
        hidden: index_u32(op, "hidden", hidden)?,
    }))
}

/// Names a failed launch of kernel `op` (the launch's timing events, which
/// the wrappers do not ask for, are dropped).
pub(crate) fn launched<R>(op: &str, result: std::result::Result<R, DriverError>) -> Result<()> {
    result
        .map(drop)
        .map_err(CudaKernelError::driver(format!("launching {op}")))
}

/// Where the q and k heads of each token are in the buffer `rotary_neox`
/// rotates in place (usually the fused qkv activation: q at 0, k at
/// `num_q_heads * head_dim`, tokens `(num_q_heads + 2 * num_kv_heads) *
/// head_dim` apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotaryLayout {
    pub num_tokens: usize,
    pub num_q_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Leading dims rotated (even, at most `head_dim`); the rest pass through.
    pub rot_dim: usize,
    /// Elements between consecutive tokens.
    pub token_stride: usize,
    /// Offset of q head 0 within a token.
    pub q_offset: usize,
    /// Offset of k head 0 within a token.
    pub k_offset: usize,
}

/// Where the head rows [`CudaKernels::head_rms_norm`] normalises are: head
/// `h` of token `t` starts at `t * token_stride + offset + h * head_dim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadRows {
    pub num_tokens: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub token_stride: usize,
    pub offset: usize,
}

impl CudaKernels {
    /// A launch of `op`'s instantiation for `T` (`{op}_{suffix}`) on the
    /// kernels' stream, for the wrapper to push the arguments to.
    pub(crate) fn launch_of<T: CudaElement>(&self, op: &str) -> Result<LaunchArgs<'_>> {
        let f = self.function(&format!("{op}_{}", T::SUFFIX))?;
        Ok(self.stream.launch_builder(f))
    }

    /// `out[t, :] = table[ids[t], :]` for `t < num_tokens`; `table` is
    /// `[vocab, hidden]`. Ids must be below `vocab` (the runner checks them
    /// on the host); an id that is not gives a NaN row, never a stray read.
    pub fn embedding<T: CudaElement>(
        &self,
        out: &mut CudaViewMut<'_, T>,
        table: &CudaView<'_, T>,
        ids: &CudaView<'_, u32>,
        num_tokens: usize,
        hidden: usize,
    ) -> Result<()> {
        const OP: &str = "embedding";
        if num_tokens == 0 {
            return Ok(());
        }
        need(OP, "ids", ids.len(), num_tokens)?;
        need(
            OP,
            "out",
            out.len(),
            product(OP, "num_tokens * hidden", num_tokens, hidden)?,
        )?;
        if hidden == 0 {
            return Ok(());
        }
        let vocab = index_u32(OP, "vocab", table.len() / hidden)?;
        let (n, h) = (
            index_u32(OP, "num_tokens", num_tokens)?,
            index_u32(OP, "hidden", hidden)?,
        );
        let mut launch = self.launch_of::<T>(OP)?;
        launch
            .arg(out)
            .arg(table)
            .arg(ids)
            .arg(&n)
            .arg(&vocab)
            .arg(&h);
        // SAFETY: arguments match `embedding` in embedding.cu in order and
        // type; `out` holds num_tokens rows and `ids` num_tokens entries;
        // table rows are read only for ids < vocab = table.len() / hidden.
        launched(OP, unsafe {
            launch.launch(per_row(n, hidden, std::mem::size_of::<T>()))
        })
    }

    /// `out = x / sqrt(mean(x^2) + eps) * weight` over rows of `hidden`.
    pub fn rms_norm<T: CudaElement>(
        &self,
        out: &mut CudaViewMut<'_, T>,
        x: &CudaView<'_, T>,
        weight: &CudaView<'_, T>,
        num_rows: usize,
        hidden: usize,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "rms_norm";
        let buffers = [("out", out.len()), ("x", x.len())];
        let Some(NormRows { rows, hidden: h }) =
            norm_rows(OP, num_rows, hidden, &buffers, weight.len())?
        else {
            return Ok(());
        };
        let mut launch = self.launch_of::<T>(OP)?;
        launch
            .arg(out)
            .arg(x)
            .arg(weight)
            .arg(&rows)
            .arg(&h)
            .arg(&eps);
        // SAFETY: arguments match `rms_norm` in rms_norm.cu; every buffer
        // holds num_rows * hidden elements (weight: hidden).
        launched(OP, unsafe {
            launch.launch(per_row(rows, hidden, std::mem::size_of::<T>()))
        })
    }

    /// `residual += x` (rounded to `T`), then `out = rms_norm(residual)`:
    /// the residual add and the next norm of a decoder block in one pass.
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's parameters
    pub fn fused_add_rms_norm<T: CudaElement>(
        &self,
        out: &mut CudaViewMut<'_, T>,
        residual: &mut CudaViewMut<'_, T>,
        x: &CudaView<'_, T>,
        weight: &CudaView<'_, T>,
        num_rows: usize,
        hidden: usize,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "fused_add_rms_norm";
        let buffers = [
            ("out", out.len()),
            ("residual", residual.len()),
            ("x", x.len()),
        ];
        let Some(NormRows { rows, hidden: h }) =
            norm_rows(OP, num_rows, hidden, &buffers, weight.len())?
        else {
            return Ok(());
        };
        let mut launch = self.launch_of::<T>(OP)?;
        launch
            .arg(out)
            .arg(residual)
            .arg(x)
            .arg(weight)
            .arg(&rows)
            .arg(&h)
            .arg(&eps);
        // SAFETY: arguments match `fused_add_rms_norm` in rms_norm.cu; every
        // buffer holds num_rows * hidden elements (weight: hidden).
        launched(OP, unsafe {
            launch.launch(per_row(rows, hidden, std::mem::size_of::<T>()))
        })
    }

    /// Per-head RMSNorm in place (Qwen3's q/k norm): every head row of
    /// `heads` inside `x` is normalised over `head_dim` with `weight`.
    pub fn head_rms_norm<T: CudaElement>(
        &self,
        x: &mut CudaViewMut<'_, T>,
        weight: &CudaView<'_, T>,
        heads: &HeadRows,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "head_rms_norm";
        let row = product(OP, "num_heads * head_dim", heads.num_heads, heads.head_dim)?;
        if row + heads.offset > heads.token_stride {
            return Err(CudaKernelError::Unsupported {
                op: OP,
                reason: format!(
                    "{} heads of {} at offset {} do not fit in a token stride of {}",
                    heads.num_heads, heads.head_dim, heads.offset, heads.token_stride
                ),
            });
        }
        need(OP, "weight", weight.len(), heads.head_dim)?;
        if heads.num_tokens == 0 || row == 0 {
            return Ok(());
        }
        let last = product(
            OP,
            "num_tokens * token_stride",
            heads.num_tokens - 1,
            heads.token_stride,
        )?;
        need(OP, "x", x.len(), last + heads.offset + row)?;
        let n = index_u32(OP, "num_tokens", heads.num_tokens)?;
        let h = index_u32(OP, "num_heads", heads.num_heads)?;
        let d = index_u32(OP, "head_dim", heads.head_dim)?;
        let (stride, offset) = (heads.token_stride as u64, heads.offset as u64);
        let mut launch = self.launch_of::<T>(OP)?;
        launch
            .arg(x)
            .arg(weight)
            .arg(&n)
            .arg(&h)
            .arg(&d)
            .arg(&stride)
            .arg(&offset)
            .arg(&eps);
        // One warp per head, up to 32 warps.
        let threads = 32 * heads.num_heads.min(32) as u32;
        let cfg = LaunchConfig {
            grid_dim: (n, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match `head_rms_norm` in rms_norm.cu; the last
        // element touched, (num_tokens - 1) * token_stride + offset +
        // num_heads * head_dim - 1, is inside `x`; head rows end within the
        // token stride, so no element belongs to two rows; `weight` holds
        // head_dim values.
        launched(OP, unsafe { launch.launch(cfg) })
    }

    /// Rotates the q and k heads of `x` in place ("rotate half" / NeoX
    /// form) with the per-token `cos`/`sin` tables `[num_tokens, rot_dim /
    /// 2]` the engine builds (`Rotary::cos_sin`).
    pub fn rotary_neox<T: CudaElement>(
        &self,
        x: &mut CudaViewMut<'_, T>,
        cos: &CudaView<'_, T>,
        sin: &CudaView<'_, T>,
        l: &RotaryLayout,
    ) -> Result<()> {
        const OP: &str = "rotary_neox";
        if l.rot_dim == 0 || !l.rot_dim.is_multiple_of(2) || l.rot_dim > l.head_dim {
            return Err(CudaKernelError::Unsupported {
                op: OP,
                reason: format!(
                    "rot_dim {} must be even, non-zero and at most head_dim {}",
                    l.rot_dim, l.head_dim
                ),
            });
        }
        let q_end = l.q_offset + product(OP, "num_q_heads * head_dim", l.num_q_heads, l.head_dim)?;
        let k_end =
            l.k_offset + product(OP, "num_kv_heads * head_dim", l.num_kv_heads, l.head_dim)?;
        let disjoint = q_end <= l.k_offset || k_end <= l.q_offset;
        if !disjoint || q_end.max(k_end) > l.token_stride {
            return Err(CudaKernelError::Unsupported {
                op: OP,
                reason: format!(
                    "q heads [{}, {q_end}) and k heads [{}, {k_end}) must be disjoint and fit in \
                     a token stride of {}",
                    l.q_offset, l.k_offset, l.token_stride
                ),
            });
        }
        if l.num_tokens == 0 {
            return Ok(());
        }
        let last_token = product(
            OP,
            "num_tokens * token_stride",
            l.num_tokens - 1,
            l.token_stride,
        )?;
        need(OP, "x", x.len(), last_token + q_end.max(k_end))?;
        let table = product(OP, "num_tokens * rot_dim / 2", l.num_tokens, l.rot_dim / 2)?;
        need(OP, "cos", cos.len(), table)?;
        need(OP, "sin", sin.len(), table)?;
        let n = index_u32(OP, "num_tokens", l.num_tokens)?;
        let hq = index_u32(OP, "num_q_heads", l.num_q_heads)?;
        let hkv = index_u32(OP, "num_kv_heads", l.num_kv_heads)?;
        let d = index_u32(OP, "head_dim", l.head_dim)?;
        let rot = index_u32(OP, "rot_dim", l.rot_dim)?;
        let (stride, q_off, k_off) = (l.token_stride as u64, l.q_offset as u64, l.k_offset as u64);
        let mut launch = self.launch_of::<T>(OP)?;
        launch
            .arg(x)
            .arg(cos)
            .arg(sin)
            .arg(&n)
            .arg(&hq)
            .arg(&hkv)
            .arg(&d)
            .arg(&rot)
            .arg(&stride)
            .arg(&q_off)
            .arg(&k_off);
        // One thread per rotated pair (up to 1024): `per_row` counts 16-byte
        // words, so each pair counts as one.
        let pairs = (l.num_q_heads + l.num_kv_heads) * (l.rot_dim / 2);
        // SAFETY: arguments match `rotary_neox` in rotary.cu; the largest
        // index the kernel forms, (num_tokens - 1) * token_stride + max(q_end,
        // k_end) - 1, is inside `x`; q and k heads are disjoint within a
        // token and tokens do not overlap (both end within token_stride), so
        // no element is touched by two threads.
        launched(OP, unsafe { launch.launch(per_row(n, pairs, 16)) })
    }

    /// `out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i]`; `gate_up`
    /// is the fused `[num_tokens, 2 * inter]` projection (gate first).
    pub fn silu_mul<T: CudaElement>(
        &self,
        out: &mut CudaViewMut<'_, T>,
        gate_up: &CudaView<'_, T>,
        num_tokens: usize,
        inter: usize,
    ) -> Result<()> {
        const OP: &str = "silu_mul";
        let elems = product(OP, "num_tokens * inter", num_tokens, inter)?;
        need(OP, "out", out.len(), elems)?;
        need(
            OP,
            "gate_up",
            gate_up.len(),
            product(OP, "2 * num_tokens * inter", elems, 2)?,
        )?;
        if elems == 0 {
            return Ok(());
        }
        let (n, i) = (
            index_u32(OP, "num_tokens", num_tokens)?,
            index_u32(OP, "inter", inter)?,
        );
        let mut launch = self.launch_of::<T>(OP)?;
        launch.arg(out).arg(gate_up).arg(&n).arg(&i);
        // SAFETY: arguments match `silu_mul` in silu_mul.cu; `out` holds
        // num_tokens * inter elements and `gate_up` twice that.
        launched(OP, unsafe {
            launch.launch(per_row(n, inter, std::mem::size_of::<T>()))
        })
    }
}
