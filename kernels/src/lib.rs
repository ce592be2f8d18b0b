//! Kernels for tandem's paged KV cache, as candle custom ops.

mod error;
mod layout;
mod metadata;

pub use error::KernelError;
pub use layout::{KvCacheLayout, K, V};
pub use metadata::AttentionMetadata;
