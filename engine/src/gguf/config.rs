//! [`ModelConfig`] from GGUF metadata (`{arch}.embedding_length`, ...). The
//! values are put in config.json's shape and parsed by the one config parser,
//! so GGUF and safetensors models are validated the same way.

use serde_json::{json, Value as Json};

use super::{GgufFile, SUPPORTED_ARCHITECTURES};
use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::error::{EngineError, Result};
use candle_core::Device;

impl GgufFile {
    pub fn model_architecture(&self) -> Result<Architecture> {
        match self.architecture()?.as_str() {
            "llama" => Ok(Architecture::Llama),
            "qwen2" => Ok(Architecture::Qwen2),
            "qwen3" => Ok(Architecture::Qwen3),
            other => Err(self.unsupported(format!(
                "architecture {other:?}; tandem reads GGUF files of {SUPPORTED_ARCHITECTURES}"
            ))),
        }
    }

    pub fn model_config(&self) -> Result<ModelConfig> {
        let arch = self.model_architecture()?;
        let a = self.architecture()?;
        let key = |k: &str| format!("{a}.{k}");
        let rope_scaling = match self.get(&key("rope.scaling.type")) {
            None => Json::Null,
            Some(_) => match self.string(&key("rope.scaling.type"))?.as_str() {
                "none" => Json::Null,
                "linear" => json!({
                    "rope_type": "linear",
                    "factor": self.opt_float(&key("rope.scaling.factor"))
                        .ok_or_else(|| self.missing(&key("rope.scaling.factor")))?,
                }),
                other => {
                    return Err(self.unsupported(format!(
                        "rope scaling type {other:?} (supported: none, linear)"
                    )))
                }
            },
        };
        let embed = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .ok_or_else(|| self.unsupported("no tensor \"token_embd.weight\"".into()))?;
        let heads = self.uint(&key("attention.head_count"))?;
        let config = json!({
            "architectures": [arch.hf_name()],
            "vocab_size": embed.shape.dims()[0],
            "hidden_size": self.uint(&key("embedding_length"))?,
            "intermediate_size": self.uint(&key("feed_forward_length"))?,
            "num_hidden_layers": self.uint(&key("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": self.opt_uint(&key("attention.head_count_kv")).unwrap_or(heads),
            "head_dim": self.opt_uint(&key("attention.key_length")),
            "rms_norm_eps": self.opt_float(&key("attention.layer_norm_rms_epsilon"))
                .ok_or_else(|| self.missing(&key("attention.layer_norm_rms_epsilon")))?,
            "max_position_embeddings": self.opt_uint(&key("context_length")),
            "tie_word_embeddings": !self.has_tensor("output.weight"),
            "attention_bias": self.has_tensor("blk.0.attn_q.bias"),
            "rope_theta": self.opt_float(&key("rope.freq_base")),
            "rope_scaling": rope_scaling,
            "bos_token_id": self.opt_uint("tokenizer.ggml.bos_token_id"),
            "eos_token_id": self.opt_uint("tokenizer.ggml.eos_token_id"),
        });
        let mut config = ModelConfig::from_json(&config.to_string())?;
        config.checkpoint_dtype = Some(format!("gguf {:?}", embed.ggml_dtype));
        if let Some(factors) = self.rope_frequency_factors()? {
            if factors.len() != config.head_dim / 2 {
                return Err(self.unsupported(format!(
                    "rope_freqs.weight has {} factors; head_dim {} needs {}",
                    factors.len(),
                    config.head_dim,
                    config.head_dim / 2
                )));
            }
            config.rope.scaling = RopeScaling::FrequencyFactors(factors);
        }
        Ok(config)
    }

    /// Llama 3.1 rope scaling as llama.cpp's converter stores it: one divisor
    /// per frequency in the tensor `rope_freqs.weight`.
    fn rope_frequency_factors(&self) -> Result<Option<Vec<f32>>> {
        const NAME: &str = "rope_freqs.weight";
        if !self.has_tensor(NAME) {
            return Ok(None);
        }
        let mut file = std::fs::File::open(&self.path).map_err(|source| EngineError::Io {
            path: self.path.clone(),
            source,
        })?;
        let factors = self
            .content
            .tensor(&mut file, NAME, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| EngineError::Gguf {
                path: self.path.clone(),
                message: format!("reading {NAME}: {e}"),
            })?;
        Ok(Some(factors))
    }
}
