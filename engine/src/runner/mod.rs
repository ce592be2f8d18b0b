//! The model runner: runs one [`ForwardBatch`] on the worker's device over
//! the KV arena it owns and hands back f32 logits. The engine core talks to
//! it and to nothing device-specific.
//!
//! - CPU: the candle model ([`CausalLm`]) and a host arena ([`KvCache`]),
//!   in memory the process owns or in memory a transfer agent allocated
//!   ([`ModelRunner::with_host_arena`]).
//! - CUDA (feature `cuda`): the same weights copied to the GPU once, NVRTC
//!   kernels and cuBLAS GEMMs, the arena in device memory (see
//!   [`cuda`] and docs/gpu.md).

#[cfg(feature = "cuda")]
pub mod cuda;
mod device;
pub mod memory;

use candle_core::DType;

pub use device::DeviceSpec;

use crate::batch::ForwardBatch;
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::kv_cache::{default_kv_cache_memory, HostArena, KvCache, KvCacheLayout};
use crate::loader::EngineOptions;
use crate::models::CausalLm;

/// How many KV blocks the runner allocates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KvBudget {
    /// Exactly this many (offline generation sizes it to its requests).
    Blocks(usize),
    /// As many as fit in this many bytes (`--kv-cache-memory`).
    Bytes(usize),
    /// The device's default: on the CPU a quarter of the free memory (at
    /// most 4 GiB); on a GPU what `gpu_memory_utilization` of its total
    /// memory leaves after the weights and buffers (see [`memory`]).
    Auto { gpu_memory_utilization: f64 },
}

/// Where and how big a runner is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunnerOptions {
    pub device: DeviceSpec,
    pub kv: KvBudget,
    pub block_size: usize,
    /// Most tokens one step holds: sizes the GPU's activation buffers.
    pub max_num_batched_tokens: usize,
    /// Most sequences one step holds: sizes the GPU's logits buffer.
    pub max_num_seqs: usize,
}

impl RunnerOptions {
    /// The runner an engine with `opts` gets (as `LoadedModel::build_core`
    /// builds it).
    pub fn from_engine(opts: &EngineOptions) -> Self {
        let kv = match opts.kv_cache_memory {
            Some(bytes) => KvBudget::Bytes(bytes),
            None => KvBudget::Auto {
                gpu_memory_utilization: opts.gpu_memory_utilization,
            },
        };
        RunnerOptions {
            device: opts.device,
            kv,
            block_size: opts.scheduler.block_size,
            max_num_batched_tokens: opts.scheduler.max_num_batched_tokens,
            max_num_seqs: opts.scheduler.max_num_seqs,
        }
    }
}

/// The KV arena as metrics and `/internal/status` report it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArenaInfo {
    /// `cpu`, or `cuda:N (<GPU name>)`.
    pub device: String,
    pub num_blocks: usize,
    pub block_bytes: usize,
    pub bytes: usize,
    /// Whose memory the arena is: `process` (allocated by this process),
    /// `transfer-agent (UCX-allocated)` (a prefill/decode worker's CPU
    /// arena, read by same-host peers with one memcpy) or `cuda device`.
    #[serde(default)]
    pub memory: String,
}

// One runner per engine, moved once: the size of the CPU variant is no cost.
#[allow(clippy::large_enum_variant)]
pub enum ModelRunner {
    Cpu {
        model: CausalLm,
        kv_cache: KvCache,
    },
    #[cfg(feature = "cuda")]
    Cuda(Box<cuda::CudaRunner>),
}

impl ModelRunner {
    /// A runner for `model` (loaded on the host) on `opts.device`; a GPU
    /// runner copies the weights and then no longer needs `model`.
    pub fn new(model: &CausalLm, opts: &RunnerOptions) -> Result<Self> {
        match opts.device {
            DeviceSpec::Cpu => {
                let layout = Self::host_layout(model, opts)?;
                let kv_cache = KvCache::new(layout, model.dtype())?;
                Ok(Self::on_host(model, kv_cache))
            }
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda { .. } => Ok(ModelRunner::Cuda(Box::new(cuda::CudaRunner::new(
                model, opts,
            )?))),
            #[cfg(not(feature = "cuda"))]
            device @ DeviceSpec::Cuda { .. } => Err(EngineError::CudaNotBuilt {
                device: device.to_string(),
            }),
        }
    }

    /// The arena layout a CPU runner for `model` with `opts` uses: as many
    /// blocks as `opts.kv` allows, at least one. Size an arena for
    /// [`Self::with_host_arena`] with it (`layout.shape()` elements of
    /// `model.dtype()`). Errors for a GPU device.
    pub fn host_layout(model: &CausalLm, opts: &RunnerOptions) -> Result<KvCacheLayout> {
        if opts.device != DeviceSpec::Cpu {
            return Err(EngineError::CpuOnly {
                what: "a KV arena in host memory",
                reason: "a GPU runner keeps its arena in device memory",
            });
        }
        let bytes_per_block =
            KvCache::bytes_per_block(model.config(), opts.block_size, model.dtype());
        let num_blocks = match opts.kv {
            KvBudget::Blocks(n) => n,
            KvBudget::Bytes(b) => b / bytes_per_block,
            KvBudget::Auto { .. } => default_kv_cache_memory() / bytes_per_block,
        }
        .max(1);
        Ok(KvCache::layout_for(
            model.config(),
            num_blocks,
            opts.block_size,
        ))
    }

    /// A CPU runner whose KV arena is `arena` (e.g. memory a transfer agent
    /// allocated, so same-host peers read blocks with one memcpy). `arena`
    /// must hold [`Self::host_layout`]'s elements of `model.dtype()`; its
    /// contents are used as they are (zero it first).
    pub fn with_host_arena(
        model: &CausalLm,
        opts: &RunnerOptions,
        arena: HostArena,
    ) -> Result<Self> {
        let layout = Self::host_layout(model, opts)?;
        let kv_cache = KvCache::with_arena(layout, model.dtype(), arena)?;
        Ok(Self::on_host(model, kv_cache))
    }

    /// The CPU runner, its weights packed for this CPU's kernels first.
    fn on_host(model: &CausalLm, kv_cache: KvCache) -> Self {
        model.pack_ahead();
        ModelRunner::Cpu {
            model: model.clone(),
            kv_cache,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        match self {
            ModelRunner::Cpu { model, .. } => model.config(),
            #[cfg(feature = "cuda")]
            ModelRunner::Cuda(r) => r.config(),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            ModelRunner::Cpu { model, .. } => model.dtype(),
            #[cfg(feature = "cuda")]
            ModelRunner::Cuda(r) => r.dtype(),
        }
    }

    pub fn layout(&self) -> KvCacheLayout {
        match self {
            ModelRunner::Cpu { kv_cache, .. } => kv_cache.layout,
            #[cfg(feature = "cuda")]
            ModelRunner::Cuda(r) => r.layout(),
        }
    }

    /// The KV cache in host memory (its arena, layout and dtype); an error
    /// naming the device when it is not on the host.
    pub fn host_kv_cache(&self) -> Result<&KvCache> {
        match self {
            ModelRunner::Cpu { kv_cache, .. } => Ok(kv_cache),
            #[cfg(feature = "cuda")]
            ModelRunner::Cuda(_) => Err(EngineError::CpuOnly {
                what: "prefill/decode KV transfer (--role prefill or decode)",
                reason: "moving KV blocks out of GPU memory is not built yet; run --role both \
                         (colocated) on a GPU",
            }),
        }
    }

    pub fn arena_info(&self) -> ArenaInfo {
        let layout = self.layout();
        let block_bytes = layout.block_elems() * self.dtype().size_in_bytes();
        let (device, memory) = match self {
            ModelRunner::Cpu { kv_cache, .. } => ("cpu".to_string(), kv_cache.memory()),
            #[cfg(feature = "cuda")]
            ModelRunner::Cuda(r) => (r.device_name().to_string(), "cuda device"),
        };
        ArenaInfo {
            device,
            num_blocks: layout.num_blocks,
            block_bytes,
            bytes: block_bytes * layout.num_blocks,
            memory: memory.to_string(),
        }
    }

    /// Runs one step; f32 logits, row-major `[logits_indices.len(), vocab]`.
    pub fn forward(&mut self, batch: &ForwardBatch) -> Result<Vec<f32>> {
        match self {
            ModelRunner::Cpu { model, kv_cache } => Ok(model
                .forward(batch, kv_cache)?
                .flatten_all()?
                .to_vec1::<f32>()?),
            #[cfg(feature = "cuda")]
            ModelRunner::Cuda(r) => r.forward(batch),
        }
    }
}
