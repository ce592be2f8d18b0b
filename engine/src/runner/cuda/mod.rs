//! The GPU runner (feature `cuda`): the model's weights in device memory in
//! the compute dtype, the block-major KV arena beside them, and one step as
//! a fixed sequence of launches on one stream — tandem's NVRTC kernels for
//! everything but the GEMMs, cuBLAS (f32 accumulation) for those. Logits
//! come back to the host in f32, where the sampler runs, as on the CPU.
//!
//! Nothing here needs a CUDA toolkit to build: cudarc loads libcuda,
//! libnvrtc and libcublas when [`CudaRunner::new`] first runs, and a
//! machine without them gets an error that names what is missing.

mod forward;
mod weights;

use std::sync::Arc;

use candle_core::DType;
use cudarc::driver::{CudaSlice, CudaStream};
use half::{bf16, f16};
use tandem_kernels::cuda::{open_device, Blas, CudaElement, CudaKernels};

use super::memory::{kv_blocks_for_device, DeviceMemory};
use super::{KvBudget, RunnerOptions};
use crate::batch::ForwardBatch;
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::kv_cache::{KvCache, KvCacheLayout};
use crate::models::{CausalLm, Rotary};
use forward::Activations;
use weights::DeviceWeights;

/// A model and its KV arena on one GPU.
pub struct CudaRunner {
    config: ModelConfig,
    device_name: String,
    dtype: DType,
    layout: KvCacheLayout,
    model: TypedModel,
}

/// The per-dtype state; every method dispatches on it once.
enum TypedModel {
    F32(GpuModel<f32>),
    Bf16(GpuModel<bf16>),
    F16(GpuModel<f16>),
}

/// Element types the runner computes in: the kernels' types that candle can
/// hand over from the host.
pub(crate) trait RunnerElement: CudaElement + candle_core::WithDType {}
impl RunnerElement for f32 {}
impl RunnerElement for bf16 {}
impl RunnerElement for f16 {}

struct GpuModel<T> {
    shared: Shared,
    weights: DeviceWeights<T>,
    acts: Activations<T>,
    arena: CudaSlice<T>,
}

/// What every dtype's model uses the same way.
struct Shared {
    stream: Arc<CudaStream>,
    kernels: CudaKernels,
    blas: Blas,
    rotary: Rotary,
    layout: KvCacheLayout,
    config: ModelConfig,
}

impl CudaRunner {
    pub fn new(model: &CausalLm, opts: &RunnerOptions) -> Result<Self> {
        let device = opts.device.to_string();
        let ordinal = match opts.device {
            super::DeviceSpec::Cuda { ordinal } => ordinal,
            super::DeviceSpec::Cpu => unreachable!("CudaRunner::new is only called for cuda"),
        };
        let fail = |message: String| EngineError::Cuda {
            device: device.clone(),
            message,
        };
        let ctx = open_device(ordinal).map_err(|e| fail(e.to_string()))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let device_name = format!("{device} ({name})");
        // The context's default stream: one stream, so cudarc tracks no
        // cross-stream events and every launch is ordered after the last.
        let stream = ctx.default_stream();
        let kernels = CudaKernels::new(stream.clone()).map_err(|e| fail(e.to_string()))?;
        let blas = Blas::new(stream.clone()).map_err(|e| fail(e.to_string()))?;
        let config = model.config().clone();
        let dtype = model.dtype();
        let parts = model.parts();
        let shared = Shared {
            stream,
            kernels,
            blas,
            rotary: parts.rotary.clone(),
            layout: KvCache::layout_for(&config, 0, opts.block_size),
            config: config.clone(),
        };
        let sized = SizeArena {
            device: &device_name,
            opts,
        };
        let model = match dtype {
            DType::F32 => TypedModel::F32(GpuModel::new(shared, model, &sized)?),
            DType::BF16 => TypedModel::Bf16(GpuModel::new(shared, model, &sized)?),
            DType::F16 => TypedModel::F16(GpuModel::new(shared, model, &sized)?),
            other => return Err(EngineError::UnsupportedDtype(format!("{other:?}"))),
        };
        let layout = match &model {
            TypedModel::F32(m) => m.shared.layout,
            TypedModel::Bf16(m) => m.shared.layout,
            TypedModel::F16(m) => m.shared.layout,
        };
        tracing::info!(
            device = %device_name,
            num_blocks = layout.num_blocks,
            kv_bytes = layout.block_elems() * layout.num_blocks * dtype.size_in_bytes(),
            "model and KV cache on the GPU"
        );
        Ok(CudaRunner {
            config,
            device_name,
            dtype,
            layout,
            model,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn layout(&self) -> KvCacheLayout {
        self.layout
    }

    /// `cuda:N (<GPU name>)`.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    pub fn forward(&mut self, batch: &ForwardBatch) -> Result<Vec<f32>> {
        let result = match &mut self.model {
            TypedModel::F32(m) => m.forward(batch),
            TypedModel::Bf16(m) => m.forward(batch),
            TypedModel::F16(m) => m.forward(batch),
        };
        result.map_err(|message| EngineError::Cuda {
            device: self.device_name.clone(),
            message,
        })
    }
}

/// What sizing the arena needs to know.
struct SizeArena<'a> {
    device: &'a str,
    opts: &'a RunnerOptions,
}

impl SizeArena<'_> {
    /// Blocks for the arena, decided after the weights and buffers are
    /// allocated (so the driver's free figure already counts them).
    fn num_blocks(&self, stream: &CudaStream, block_bytes: usize) -> Result<usize> {
        let fraction = match self.opts.kv {
            KvBudget::Blocks(n) => return Ok(n.max(1)),
            KvBudget::Bytes(b) => return Ok((b / block_bytes).max(1)),
            KvBudget::Auto {
                gpu_memory_utilization,
            } => gpu_memory_utilization,
        };
        let (free, total) = stream
            .context()
            .mem_get_info()
            .map_err(|e| EngineError::Cuda {
                device: self.device.to_string(),
                message: format!("reading free device memory: {e}"),
            })?;
        let sizing = kv_blocks_for_device(DeviceMemory { total, free }, fraction, block_bytes);
        if sizing.num_blocks == 0 {
            const MIB: usize = 1 << 20;
            return Err(EngineError::GpuMemory {
                device: self.device.to_string(),
                fraction,
                total_mib: total / MIB,
                used_mib: sizing.used / MIB,
                available_mib: sizing.available / MIB,
                block_mib: block_bytes as f64 / MIB as f64,
            });
        }
        Ok(sizing.num_blocks)
    }
}

impl<T: RunnerElement> GpuModel<T> {
    fn new(mut shared: Shared, model: &CausalLm, sized: &SizeArena<'_>) -> Result<Self> {
        let fail = |message| EngineError::Cuda {
            device: sized.device.to_string(),
            message,
        };
        let weights = DeviceWeights::upload(&shared.stream, model).map_err(fail)?;
        let acts = Activations::new(
            &shared.stream,
            &shared.config,
            sized.opts.max_num_batched_tokens,
            sized.opts.max_num_seqs,
        )
        .map_err(fail)?;
        let block_bytes = shared.layout.block_elems() * std::mem::size_of::<T>();
        shared.layout.num_blocks = sized.num_blocks(&shared.stream, block_bytes)?;
        let elems = shared.layout.block_elems() * shared.layout.num_blocks;
        let arena = shared
            .stream
            .alloc_zeros::<T>(elems)
            .map_err(|e| EngineError::Cuda {
                device: sized.device.to_string(),
                message: format!(
                    "allocating the KV cache ({} blocks, {} MiB): {e}",
                    shared.layout.num_blocks,
                    (elems * std::mem::size_of::<T>()) >> 20
                ),
            })?;
        Ok(GpuModel {
            shared,
            weights,
            acts,
            arena,
        })
    }
}
