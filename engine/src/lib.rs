//! tandem's engine: model loading, paged KV cache, sampler and the forward pass.

pub mod demo;
pub mod sampler;
