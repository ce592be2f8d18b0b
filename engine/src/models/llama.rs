//! Llama (2, 3, 3.1+): optional bias on all four projections
//! (`attention_bias`); llama3 rope scaling is handled in the rotary module.

use super::DecoderSpec;
use crate::config::ModelConfig;

pub fn spec(cfg: &ModelConfig) -> DecoderSpec {
    DecoderSpec {
        qkv_bias: cfg.attention_bias,
        o_bias: cfg.attention_bias,
        qk_norm: false,
    }
}
