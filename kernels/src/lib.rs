//! Kernels for tandem's paged KV cache, as candle custom ops.
