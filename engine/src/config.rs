//! `config.json` of a Hugging Face checkpoint, read in both dialects that
//! transformers writes: 4.x (`rope_theta`, `rope_scaling`, `torch_dtype`) and
//! 5.x (`rope_parameters`, `dtype`). Everything downstream sees one
//! [`ModelConfig`], so model code never branches on the dialect.

use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

use crate::error::{read_json, EngineError, Result};

/// The decoder families tandem runs. They share one forward pass and differ in
/// the switches of [`crate::models::DecoderSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Architecture {
    pub const SUPPORTED: &'static [(&'static str, Architecture)] = &[
        ("LlamaForCausalLM", Architecture::Llama),
        ("MistralForCausalLM", Architecture::Mistral),
        ("Qwen2ForCausalLM", Architecture::Qwen2),
        ("Qwen3ForCausalLM", Architecture::Qwen3),
    ];

    pub fn hf_name(self) -> &'static str {
        Self::SUPPORTED
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    fn from_names(names: &[String]) -> Result<Self> {
        names
            .iter()
            .find_map(|n| {
                Self::SUPPORTED
                    .iter()
                    .find(|(s, _)| s == n)
                    .map(|(_, a)| *a)
            })
            .ok_or_else(|| EngineError::UnsupportedArchitecture {
                found: names.to_vec(),
                supported: Self::SUPPORTED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// How rotary frequencies are adjusted for long context.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (transformers' "linear").
    Linear {
        factor: f64,
    },
    /// Llama 3.1's piecewise frequency rescaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// One divisor per inverse frequency (`head_dim / 2` of them): how
    /// llama.cpp's GGUF files carry Llama 3.1 scaling (`rope_freqs.weight`).
    FrequencyFactors(Vec<f32>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// The parsed, validated model configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub rope: RopeConfig,
    /// Mistral-style attention window (tokens); `None` = full attention.
    pub sliding_window: Option<usize>,
    /// The dtype the checkpoint was saved in, as config.json says.
    pub checkpoint_dtype: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// The raw JSON, every field optional so missing keys get a named error.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    hidden_act: Option<String>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

fn required<T>(v: Option<T>, key: &str) -> Result<T> {
    v.ok_or_else(|| EngineError::InvalidConfig(format!("config.json lacks {key:?}")))
}

/// Token ids appear as a number, a list of numbers or null.
pub(crate) fn token_ids(v: &Option<Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

fn rope_from(raw: &RawConfig) -> Result<RopeConfig> {
    // 5.x keeps theta inside rope_parameters; 4.x has it at the top level.
    let params = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
    let theta = raw
        .rope_parameters
        .as_ref()
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
        .or(raw.rope_theta)
        .unwrap_or(10_000.0);
    let Some(params) = params.filter(|p| !p.is_null()) else {
        return Ok(RopeConfig {
            theta,
            scaling: RopeScaling::None,
        });
    };
    let kind = params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        params
            .get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| EngineError::InvalidConfig(format!("rope scaling {kind:?} lacks {k:?}")))
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(EngineError::UnsupportedConfig(format!(
                "rope_type {other:?} (supported: default, linear, llama3)"
            )))
        }
    };
    Ok(RopeConfig { theta, scaling })
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: RawConfig = read_json(path, "a model config")?;
        Self::from_raw(raw)
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| EngineError::InvalidConfig(format!("config.json: {e}")))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self> {
        let architecture = Architecture::from_names(&raw.architectures)?;
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" && act != "swish" {
                return Err(EngineError::UnsupportedConfig(format!(
                    "hidden_act {act:?} (only silu is supported)"
                )));
            }
        }
        let hidden_size = required(raw.hidden_size, "hidden_size")?;
        let num_heads = required(raw.num_attention_heads, "num_attention_heads")?;
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(EngineError::InvalidConfig(format!(
                "num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"
            )));
        }
        let head_dim = raw.head_dim.unwrap_or(hidden_size / num_heads);
        if !head_dim.is_multiple_of(2) {
            return Err(EngineError::InvalidConfig(format!(
                "head_dim {head_dim} must be even for rotary embeddings"
            )));
        }
        let sliding_window = match architecture {
            Architecture::Mistral => raw.sliding_window,
            Architecture::Qwen2 | Architecture::Qwen3 if raw.use_sliding_window == Some(true) => {
                return Err(EngineError::UnsupportedConfig(
                    "use_sliding_window = true for Qwen models (per-layer windows are not implemented)"
                        .into(),
                ))
            }
            _ => None,
        };
        let attention_bias = match architecture {
            Architecture::Qwen2 => true,
            Architecture::Mistral => false,
            Architecture::Llama | Architecture::Qwen3 => raw.attention_bias.unwrap_or(false),
        };
        Ok(ModelConfig {
            architecture,
            vocab_size: required(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: required(raw.intermediate_size, "intermediate_size")?,
            num_layers: required(raw.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias,
            rope: rope_from(&raw)?,
            sliding_window,
            checkpoint_dtype: raw.dtype.or(raw.torch_dtype),
            bos_token_id: token_ids(&raw.bos_token_id).first().copied(),
            eos_token_ids: token_ids(&raw.eos_token_id),
        })
    }

    /// Parameters implied by the config (embeddings counted once when tied).
    pub fn num_parameters(&self) -> u64 {
        let (h, i, d) = (
            self.hidden_size as u64,
            self.intermediate_size as u64,
            self.head_dim as u64,
        );
        let q = self.num_heads as u64 * d;
        let kv = self.num_kv_heads as u64 * d;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let attn = h * (q + 2 * kv) + q * h + bias;
        let qk_norm = if self.architecture == Architecture::Qwen3 {
            2 * d
        } else {
            0
        };
        let layer = attn + 3 * h * i + 2 * h + qk_norm;
        let embed = self.vocab_size as u64 * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        self.num_layers as u64 * layer + embed + head + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
      "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,
      "rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
      "high_freq_factor":4.0,"original_max_position_embeddings":64},"torch_dtype":"float32"}"#;
    const V5: &str = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
      "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,
      "rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
      "high_freq_factor":4.0,"original_max_position_embeddings":64},"dtype":"float32"}"#;

    #[test]
    fn both_dialects_give_the_same_rope() {
        let a = ModelConfig::from_json(V4).unwrap();
        let b = ModelConfig::from_json(V5).unwrap();
        assert_eq!(a.rope, b.rope);
        assert_eq!(a.rope.theta, 500000.0);
        assert!(matches!(a.rope.scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(a.checkpoint_dtype.as_deref(), Some("float32"));
        assert_eq!(b.checkpoint_dtype.as_deref(), Some("float32"));
        assert_eq!(a.head_dim, 16);
    }

    #[test]
    fn unknown_architecture_is_named() {
        let err = ModelConfig::from_json(r#"{"architectures":["GPT2LMHeadModel"]}"#).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("GPT2LMHeadModel"), "{msg}");
        assert!(msg.contains("Qwen3ForCausalLM"), "{msg}");
    }

    #[test]
    fn missing_key_is_named() {
        let err = ModelConfig::from_json(
            r#"{"architectures":["LlamaForCausalLM"],"num_attention_heads":4}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("hidden_size"), "{err}");
    }

    #[test]
    fn unsupported_rope_type_is_named() {
        let text = V4.replace("\"llama3\"", "\"yarn\"");
        let err = ModelConfig::from_json(&text).unwrap_err();
        assert!(err.to_string().contains("yarn"), "{err}");
    }
}
