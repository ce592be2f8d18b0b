//! Model architectures. Each supported family has its own small file that
//! says how it differs (biases, q/k norm, windows); the forward pass they
//! share lives in [`decoder`] with its layers in [`layers`], [`attention`]
//! and [`rotary`].

mod attention;
mod decoder;
mod layers;
mod llama;
mod mistral;
mod qwen2;
mod qwen3;
mod rotary;

use candle_core::Tensor;
use tandem_kernels::AttentionMetadata;

pub use attention::Attention;
pub use decoder::{CausalLm, DecoderParts, LayerParts};
pub use layers::{Linear, Mlp, RmsNorm};
pub use rotary::{Rotary, RotaryTables};

use crate::config::{Architecture, ModelConfig};
use crate::kv_cache::KvCache;

/// The switches that distinguish the supported decoders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderSpec {
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub qk_norm: bool,
}

impl DecoderSpec {
    pub fn for_config(cfg: &ModelConfig) -> Self {
        match cfg.architecture {
            Architecture::Llama => llama::spec(cfg),
            Architecture::Mistral => mistral::spec(cfg),
            Architecture::Qwen2 => qwen2::spec(cfg),
            Architecture::Qwen3 => qwen3::spec(cfg),
        }
    }
}

/// Per-step inputs every layer reads.
pub(crate) struct StepContext<'a> {
    pub cos: Tensor,
    pub sin: Tensor,
    pub attn: &'a AttentionMetadata,
    pub kv_cache: &'a KvCache,
}
