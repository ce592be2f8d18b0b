//! Mistral: Llama's block without biases, plus an optional sliding attention
//! window (`sliding_window`), which the paged-attention kernel applies.

use super::DecoderSpec;
use crate::config::ModelConfig;

pub fn spec(_cfg: &ModelConfig) -> DecoderSpec {
    DecoderSpec {
        qkv_bias: false,
        o_bias: false,
        qk_norm: false,
    }
}
