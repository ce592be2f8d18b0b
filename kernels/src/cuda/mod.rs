//! CUDA kernels (feature `cuda`): the GPU model runner's operations besides
//! the GEMMs (embedding gather, RMSNorm with optional residual add, rotary,
//! SiLU-mul, reshape-and-cache into the block-major arena, paged attention
//! over the mixed varlen batch), in bf16, f16 and f32 with f32 maths.
//!
//! The CUDA C sources (`*.cu` beside this file) are embedded in the binary
//! and compiled at run time by NVRTC for the GPU at hand; cudarc loads
//! `libnvrtc` and the driver (`libcuda`) when first used. Building therefore
//! needs neither a CUDA toolkit nor a GPU, and CI compiles every source for
//! sm_90 with NVRTC from a Python wheel (`tests/cuda_compile.rs`).
//!
//! Usage: [`open_device`], a stream, [`CudaKernels::new`] (compiles and
//! loads everything, once), then per step
//! [`CudaKernels::upload_attention_metadata`] and the launch wrappers, which
//! check every buffer length against the sizes they are given and enqueue
//! the kernel on the stream.

mod attention;
mod cache;
mod device;
mod error;
mod gemm;
mod nvrtc;
mod ops;
mod plan;
mod sources;

pub use attention::{AttentionConfig, DeviceAttentionMetadata, QStrides};
pub use cache::KERNEL_CACHE_ENV;
pub use device::{driver_available, open_device, CudaElement, CudaKernels};
pub use error::CudaKernelError;
pub use gemm::{Blas, GemmShape};
pub use nvrtc::{compile, cuda_include_dir, nvrtc_available, nvrtc_version, Compiled, INCLUDE_ENV};
pub use ops::{HeadRows, RotaryLayout};
pub use sources::{KernelSource, ATTENTION_HEAD_DIMS, DTYPE_SUFFIXES, SOURCES};
