//! Qwen3: per-head RMSNorm of queries and keys before rotary, an explicit
//! `head_dim`, and biases only when `attention_bias` says so.

use super::DecoderSpec;
use crate::config::ModelConfig;

pub fn spec(cfg: &ModelConfig) -> DecoderSpec {
    DecoderSpec {
        qkv_bias: cfg.attention_bias,
        o_bias: cfg.attention_bias,
        qk_norm: true,
    }
}
