//! Qwen2 / Qwen2.5: biases on the q, k and v projections (not on o).

use super::DecoderSpec;
use crate::config::ModelConfig;

pub fn spec(_cfg: &ModelConfig) -> DecoderSpec {
    DecoderSpec {
        qkv_bias: true,
        o_bias: false,
        qk_norm: false,
    }
}
