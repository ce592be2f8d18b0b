//! The KV-cache kernels on the GPU: a step's attention metadata checked and
//! uploaded once ([`DeviceAttentionMetadata`]), then per layer
//! `reshape_and_cache` and `paged_attention` (with the combine kernel for
//! partitioned decodes).

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};

use super::device::{CudaElement, CudaKernels};
use super::error::CudaKernelError;
use super::ops::{index_u32, launched, need, per_row, product};
use super::plan::{plan, PlanShape};
use super::sources::ATTENTION_HEAD_DIMS;
use crate::checks::check_slot_mapping;
use crate::error::KernelError;
use crate::layout::KvCacheLayout;
use crate::metadata::AttentionMetadata;

type Result<T> = std::result::Result<T, CudaKernelError>;

/// Threads of one attention block (4 warps) and keys per step; as `WARPS`
/// and `CHUNK` in paged_attention.cu.
const ATTENTION_THREADS: u32 = 128;
const WARPS: usize = 4;
const CHUNK: usize = 32;
const COMBINE_THREADS: u32 = 256;
/// Dynamic shared memory a block gets without opting in.
const DEFAULT_SHARED_LIMIT: usize = 48 * 1024;
/// Aim for this many attention blocks per multiprocessor before splitting
/// long contexts into partitions.
const ITEMS_PER_SM: usize = 4;

/// The attention kernel's tile for one head dim; the same arithmetic as
/// `Geometry` in paged_attention.cu (the kernel traps on a launch whose
/// shared memory or tile disagrees).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    head_dim: usize,
    /// The instantiation: head dims up to `32 * dims_per_lane`.
    dims_per_lane: usize,
    rows_per_warp: usize,
}

impl Geometry {
    fn new(head_dim: usize) -> Result<Self> {
        let hd = ATTENTION_HEAD_DIMS
            .into_iter()
            .find(|&hd| hd >= head_dim)
            .ok_or_else(|| CudaKernelError::Unsupported {
                op: "paged_attention",
                reason: format!(
                    "head_dim {head_dim} is above the largest the kernels are built for ({})",
                    ATTENTION_HEAD_DIMS[ATTENTION_HEAD_DIMS.len() - 1]
                ),
            })?;
        let dims_per_lane = hd / 32;
        Ok(Self {
            head_dim,
            dims_per_lane,
            rows_per_warp: (32 / dims_per_lane).min(8),
        })
    }

    fn rows_per_item(&self) -> usize {
        WARPS * self.rows_per_warp
    }

    /// Entry-point suffix `hd<N>`.
    fn max_head_dim(&self) -> usize {
        32 * self.dims_per_lane
    }

    fn shared_bytes(&self, elem_bytes: usize) -> usize {
        let n = 16 / elem_bytes;
        let padded = self.head_dim.next_multiple_of(n.max(self.dims_per_lane));
        let k_stride = padded + n;
        self.rows_per_item() * padded * 4
            + CHUNK * k_stride * elem_bytes
            + CHUNK * padded * elem_bytes
            + WARPS * self.rows_per_warp * CHUNK * 4
    }
}

/// Mirrors `Shape` in paged_attention.cu, passed by value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AttentionShape {
    q_token_stride: u64,
    q_head_stride: u64,
    num_kv_heads: u32,
    group: u32,
    head_dim: u32,
    block_size: u32,
    num_blocks: u32,
    num_layers: u32,
    layer: u32,
    max_blocks_per_seq: u32,
    sliding_window: u32,
    rows_per_item: u32,
    scale_log2: f32,
    reserved: u32,
}
const _: () = assert!(std::mem::size_of::<AttentionShape>() == 64);

// SAFETY: plain `repr(C)` data (u64, u32, f32 fields, no padding: 2 * 8 + 12
// * 4 = 64 bytes) laid out like `Shape` in paged_attention.cu, which
// static_asserts the same size.
unsafe impl DeviceRepr for AttentionShape {}

/// Heads and window of the model's attention layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionConfig {
    /// Query heads (a multiple of the layout's KV heads).
    pub num_heads: usize,
    /// `Some(w)`: a token sees only the last `w` positions, itself included.
    pub sliding_window: Option<usize>,
}

/// One step's [`AttentionMetadata`], validated and on the device with its
/// work plan and partial-state scratch; every layer of the step uses it.
pub struct DeviceAttentionMetadata {
    layout: KvCacheLayout,
    config: AttentionConfig,
    geometry: Geometry,
    num_tokens: usize,
    max_blocks_per_seq: usize,
    block_tables: CudaSlice<u32>,
    slot_mapping: CudaSlice<i64>,
    items: CudaSlice<u32>,
    num_items: usize,
    splits: CudaSlice<u32>,
    num_splits: usize,
    part_acc: CudaSlice<f32>,
    part_ml: CudaSlice<f32>,
}

impl DeviceAttentionMetadata {
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    pub fn layout(&self) -> &KvCacheLayout {
        &self.layout
    }
}

/// Where q's rows are: element `[t, h, c]` is at `t * token_stride + h *
/// head_stride + c` of the q buffer (a view of the fused qkv activation is
/// `token_stride = (num_heads + 2 * num_kv_heads) * head_dim`,
/// `head_stride = head_dim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QStrides {
    pub token_stride: usize,
    pub head_stride: usize,
}

impl CudaKernels {
    fn upload<T: DeviceRepr + Copy>(&self, data: &[T], pad: T, what: &str) -> Result<CudaSlice<T>> {
        // Never a zero-length allocation: the driver refuses those.
        let padded;
        let data = if data.is_empty() {
            padded = [pad];
            &padded[..]
        } else {
            data
        };
        self.stream
            .clone_htod(data)
            .map_err(CudaKernelError::driver(format!("uploading {what}")))
    }

    fn scratch(&self, len: usize, what: &str) -> Result<CudaSlice<f32>> {
        self.stream
            .alloc_zeros(len.max(1))
            .map_err(CudaKernelError::driver(format!("allocating {what}")))
    }

    /// Checks `meta` for a batch of `num_tokens` query rows against the
    /// arena `layout` (the same checks as the CPU kernels, plus the slot
    /// mapping), plans the attention work and uploads it all.
    pub fn upload_attention_metadata(
        &self,
        meta: &AttentionMetadata,
        num_tokens: usize,
        layout: &KvCacheLayout,
        config: AttentionConfig,
    ) -> Result<DeviceAttentionMetadata> {
        const OP: &str = "attention metadata";
        layout.validate()?;
        meta.validate(num_tokens, layout)?;
        check_slot_mapping(&meta.slot_mapping, num_tokens, layout)?;
        if config.num_heads == 0 || !config.num_heads.is_multiple_of(layout.num_kv_heads) {
            return Err(KernelError::HeadsNotMultiple {
                num_heads: config.num_heads,
                num_kv_heads: layout.num_kv_heads,
            }
            .into());
        }
        if config.sliding_window == Some(0) {
            return Err(KernelError::ZeroSlidingWindow.into());
        }
        for (what, value) in [
            ("num_tokens", num_tokens),
            ("num_blocks", layout.num_blocks),
            ("max_blocks_per_seq", meta.max_blocks_per_seq),
            ("num_heads", config.num_heads),
            ("sliding_window", config.sliding_window.unwrap_or(0)),
        ] {
            index_u32(OP, what, value)?;
        }
        let geometry = Geometry::new(layout.head_dim)?;
        let plan = plan(
            meta,
            &PlanShape {
                num_kv_heads: layout.num_kv_heads,
                group: config.num_heads / layout.num_kv_heads,
                rows_per_item: geometry.rows_per_item(),
                sliding_window: config.sliding_window,
                target_items: self.num_sms.max(1) * ITEMS_PER_SM,
            },
        );
        let partial_rows = product(
            OP,
            "partial rows",
            plan.num_partials,
            geometry.rows_per_item(),
        )?;
        Ok(DeviceAttentionMetadata {
            layout: *layout,
            config,
            geometry,
            num_tokens,
            max_blocks_per_seq: meta.max_blocks_per_seq,
            block_tables: self.upload(&meta.block_tables, 0, "block tables")?,
            slot_mapping: self.upload(&meta.slot_mapping, -1, "the slot mapping")?,
            items: self.upload(&plan.item_words(), 0, "attention work items")?,
            num_items: plan.items.len(),
            splits: self.upload(&plan.split_words(), 0, "attention split tiles")?,
            num_splits: plan.splits.len(),
            part_acc: self.scratch(
                product(OP, "partial accumulators", partial_rows, layout.head_dim)?,
                "attention partial accumulators",
            )?,
            part_ml: self.scratch(2 * partial_rows, "attention partial maxima")?,
        })
    }

    /// Writes the step's new K and V rows of `layer` into their arena slots
    /// (`meta`'s slot mapping; -1 skips a token). `k` and `v` start at head
    /// 0 of token 0; heads are contiguous (`head_dim` apart) and tokens
    /// `k_token_stride` / `v_token_stride` apart.
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's parameters
    pub fn reshape_and_cache<T: CudaElement>(
        &self,
        arena: &mut CudaViewMut<'_, T>,
        k: &CudaView<'_, T>,
        k_token_stride: usize,
        v: &CudaView<'_, T>,
        v_token_stride: usize,
        layer: usize,
        meta: &DeviceAttentionMetadata,
    ) -> Result<()> {
        const OP: &str = "reshape_and_cache";
        let l = &meta.layout;
        check_layer(OP, layer, l)?;
        need(OP, "arena", arena.len(), l.shape().iter().product())?;
        let n = meta.num_tokens;
        if n == 0 {
            return Ok(());
        }
        let row = l.num_kv_heads * l.head_dim;
        for (what, len, stride) in [
            ("k", k.len(), k_token_stride),
            ("v", v.len(), v_token_stride),
        ] {
            if stride < row {
                return Err(CudaKernelError::Unsupported {
                    op: OP,
                    reason: format!(
                        "{what}'s token stride {stride} is shorter than a row of {row}"
                    ),
                });
            }
            need(
                OP,
                what,
                len,
                product(OP, "token rows", n - 1, stride)? + row,
            )?;
        }
        let args = (
            index_u32(OP, "num_tokens", n)?,
            k_token_stride as u64,
            v_token_stride as u64,
            index_u32(OP, "num_blocks", l.num_blocks)?,
            index_u32(OP, "num_layers", l.num_layers)?,
            index_u32(OP, "layer", layer)?,
            index_u32(OP, "block_size", l.block_size)?,
            index_u32(OP, "num_kv_heads * head_dim", row)?,
        );
        let mut launch = self.launch_of::<T>(OP)?;
        launch
            .arg(arena)
            .arg(k)
            .arg(v)
            .arg(&meta.slot_mapping)
            .arg(&args.0)
            .arg(&args.1)
            .arg(&args.2)
            .arg(&args.3)
            .arg(&args.4)
            .arg(&args.5)
            .arg(&args.6)
            .arg(&args.7);
        let cfg = per_row(args.0, row, std::mem::size_of::<T>());
        // SAFETY: arguments match `reshape_and_cache` in reshape_and_cache.cu.
        // The slot mapping was checked on the host (one entry per token, -1
        // or < num_blocks * block_size; the kernel re-checks the range), so
        // every write lands in the arena, whose length was checked; k and v
        // hold num_tokens rows at their strides.
        launched(OP, unsafe { launch.launch(cfg) })
    }

    /// Attention of `q` over the cached K/V of `layer` for the batch `meta`
    /// describes; writes `out` as `[num_tokens, num_heads, head_dim]`. This
    /// step's K/V must already be in the arena
    /// ([`CudaKernels::reshape_and_cache`]).
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's parameters
    pub fn paged_attention<T: CudaElement>(
        &self,
        out: &mut CudaViewMut<'_, T>,
        q: &CudaView<'_, T>,
        q_strides: QStrides,
        arena: &CudaView<'_, T>,
        layer: usize,
        softmax_scale: f32,
        meta: &DeviceAttentionMetadata,
    ) -> Result<()> {
        const OP: &str = "paged_attention";
        let l = &meta.layout;
        check_layer(OP, layer, l)?;
        if !softmax_scale.is_finite() {
            return Err(KernelError::BadSoftmaxScale(softmax_scale).into());
        }
        need(OP, "arena", arena.len(), l.shape().iter().product())?;
        let (n, heads, d) = (meta.num_tokens, meta.config.num_heads, l.head_dim);
        let out_rows = product(OP, "num_tokens * num_heads", n, heads)?;
        need(
            OP,
            "out",
            out.len(),
            product(OP, "output elements", out_rows, d)?,
        )?;
        if n == 0 || meta.num_items == 0 {
            return Ok(());
        }
        let QStrides {
            token_stride,
            head_stride,
        } = q_strides;
        let q_last = product(OP, "q token rows", n - 1, token_stride)?
            + product(OP, "q head rows", heads - 1, head_stride)?;
        need(OP, "q", q.len(), q_last + d)?;

        let g = meta.geometry;
        let shared = g.shared_bytes(std::mem::size_of::<T>());
        if shared > self.max_shared_optin.max(DEFAULT_SHARED_LIMIT) {
            return Err(CudaKernelError::Unsupported {
                op: OP,
                reason: format!(
                    "head_dim {d} needs {shared} bytes of shared memory per block; this GPU allows {}",
                    self.max_shared_optin
                ),
            });
        }
        let shape = AttentionShape {
            q_token_stride: token_stride as u64,
            q_head_stride: head_stride as u64,
            num_kv_heads: index_u32(OP, "num_kv_heads", l.num_kv_heads)?,
            group: index_u32(OP, "group", heads / l.num_kv_heads)?,
            head_dim: index_u32(OP, "head_dim", d)?,
            block_size: index_u32(OP, "block_size", l.block_size)?,
            num_blocks: index_u32(OP, "num_blocks", l.num_blocks)?,
            num_layers: index_u32(OP, "num_layers", l.num_layers)?,
            layer: index_u32(OP, "layer", layer)?,
            max_blocks_per_seq: index_u32(OP, "max_blocks_per_seq", meta.max_blocks_per_seq)?,
            sliding_window: index_u32(
                OP,
                "sliding_window",
                meta.config.sliding_window.unwrap_or(0),
            )?,
            rows_per_item: index_u32(OP, "rows_per_item", g.rows_per_item())?,
            scale_log2: softmax_scale * std::f32::consts::LOG2_E,
            reserved: 0,
        };

        let name = format!("paged_attention_{}_hd{}", T::SUFFIX, g.max_head_dim());
        let f = self.function(&name)?;
        if shared > DEFAULT_SHARED_LIMIT {
            self.stream
                .context()
                .bind_to_thread()
                .map_err(CudaKernelError::driver("binding the CUDA context"))?;
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared as i32,
            )
            .map_err(CudaKernelError::driver(format!(
                "raising {name}'s shared-memory limit"
            )))?;
        }
        let mut launch = self.stream.launch_builder(f);
        launch
            .arg(&mut *out)
            .arg(q)
            .arg(arena)
            .arg(&meta.block_tables)
            .arg(&meta.items)
            .arg(&meta.part_acc)
            .arg(&meta.part_ml)
            .arg(&shape);
        let cfg = LaunchConfig {
            grid_dim: (index_u32(OP, "work items", meta.num_items)?, 1, 1),
            block_dim: (ATTENTION_THREADS, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // SAFETY: arguments match `paged_attention_<dtype>_hd<N>` in
        // paged_attention.cu, N the smallest instantiation >= head_dim. The
        // metadata was validated (block ids < num_blocks for every position
        // below a context length; the kernel re-checks them) and the items
        // come from `plan` over it: every q row and output row an item
        // touches is < num_tokens, every head < num_heads, every KV position
        // < its sequence's context length; q, out and the arena lengths were
        // checked above; partial slots < num_partials, for which part_acc
        // and part_ml were sized (rows_per_item rows each); `shared` is what
        // the kernel computes for this head_dim and dtype.
        launched(&name, unsafe { launch.launch(cfg) })?;

        if meta.num_splits > 0 {
            let name = format!(
                "paged_attention_combine_{}_hd{}",
                T::SUFFIX,
                g.max_head_dim()
            );
            let f = self.function(&name)?;
            let mut launch = self.stream.launch_builder(f);
            launch
                .arg(out)
                .arg(&meta.part_acc)
                .arg(&meta.part_ml)
                .arg(&meta.splits)
                .arg(&shape);
            let cfg = LaunchConfig {
                grid_dim: (index_u32(OP, "split tiles", meta.num_splits)?, 1, 1),
                block_dim: (COMBINE_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: arguments match `paged_attention_combine_<dtype>_hd<N>`;
            // split tiles name only partial slots the items above wrote
            // (launched earlier on the same stream) and output rows inside
            // `out`.
            launched(&name, unsafe { launch.launch(cfg) })?;
        }
        Ok(())
    }
}

fn check_layer(op: &'static str, layer: usize, l: &KvCacheLayout) -> Result<()> {
    if layer >= l.num_layers {
        return Err(KernelError::LayerOutOfRange {
            op,
            layer,
            num_layers: l.num_layers,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::plan::{SplitTile, WorkItem};
    use super::*;

    #[test]
    fn geometry_picks_the_smallest_instantiation_and_fits_default_shared_memory_for_bf16() {
        let g = Geometry::new(128).unwrap();
        assert_eq!((g.max_head_dim(), g.rows_per_item()), (128, 32));
        // Q 32 x 128 f32 + K 32 x 136 bf16 + V 32 x 128 bf16 + P 4 x 8 x 32 f32.
        assert_eq!(g.shared_bytes(2), 16384 + 8704 + 8192 + 4096);
        assert!(g.shared_bytes(2) <= DEFAULT_SHARED_LIMIT);
        assert_eq!(Geometry::new(20).unwrap().max_head_dim(), 32);
        assert_eq!(Geometry::new(80).unwrap().max_head_dim(), 128);
        assert_eq!(Geometry::new(256).unwrap().rows_per_item(), 16);
        assert!(Geometry::new(257).is_err());
        // f32 with dims_per_lane 8 > 4 per 16 bytes: rows padded to 8.
        assert_eq!(Geometry::new(132).unwrap().shared_bytes(4) % 16, 0);
    }

    #[test]
    fn work_item_words_match_the_kernel_structs() {
        assert_eq!(WorkItem::WORDS * 4, 40);
        assert_eq!(SplitTile::WORDS * 4, 32);
    }
}
