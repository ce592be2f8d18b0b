//! Kernels for tandem's paged KV cache.
//!
//! The KV arena is one block of host memory ([`HostArena`]) shaped
//! `[num_blocks, num_layers, 2, block_size, num_kv_heads, head_dim]` (see
//! [`KvCacheLayout`]); it may be memory a transfer agent allocated. [`reshape_and_cache`]
//! writes a step's new K/V into it; [`paged_attention`] runs attention for a
//! mixed batch of prefill chunks and decode tokens described by
//! [`AttentionMetadata`]. They run on the CPU (rayon, AVX2+FMA when
//! present); feature `cuda` adds the GPU versions (module `cuda`), compiled at
//! run time with NVRTC.
//!
//! Bad inputs are refused before any memory is touched, with a
//! [`KernelError`] wrapped in `candle_core::Error::Wrapped`. candle keeps it
//! as `dyn Display`, so it cannot be downcast there; engine code that wants
//! the typed error calls [`AttentionMetadata::validate`] itself.

mod add_rms_norm;
mod arena;
mod checks;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod element;
mod error;
mod layout;
mod linear;
mod metadata;
mod paged_attention;
mod reshape_and_cache;
mod swiglu;
mod vecmath;

pub use add_rms_norm::{add_rms_norm, AddNorm};
pub use arena::HostArena;
pub use cpu::gemm::amx::peak_loop as amx_peak_loop;
pub use cpu::gemm::Isa;
pub use error::KernelError;
pub use layout::{KvCacheLayout, K, V};
pub use linear::{linear, linear_on, linear_weight_on, LinearWeight};
pub use metadata::AttentionMetadata;
pub use paged_attention::paged_attention;
pub use reshape_and_cache::reshape_and_cache;
pub use swiglu::silu_mul;
