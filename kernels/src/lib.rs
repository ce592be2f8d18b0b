//! Kernels for tandem's paged KV cache, as candle custom ops.

mod checks;
mod element;
mod error;
mod layout;
mod metadata;
mod reshape_and_cache;
mod vecmath;

pub use error::KernelError;
pub use layout::{KvCacheLayout, K, V};
pub use metadata::AttentionMetadata;
pub use reshape_and_cache::reshape_and_cache;
