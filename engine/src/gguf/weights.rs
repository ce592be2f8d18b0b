//! GGUF tensors under their Hugging Face names, dequantized into the compute
//! dtype by candle and, for llama, with the Q/K row permutation that
//! llama.cpp's converter applies undone.

use candle_core::{DType, Device, Tensor};
use std::fs::File;

use super::GgufFile;
use crate::config::{Architecture, ModelConfig};
use crate::error::{EngineError, Result};

/// What candle's `quantized` module dequantizes.
pub(crate) const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

/// The GGUF name of a Hugging Face tensor name (`model.layers.3.self_attn.q_proj.weight`
/// is `blk.3.attn_q.weight`); `None` for names GGUF files do not carry.
pub fn gguf_tensor_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let gguf = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf}.{kind}"))
}

/// Which rows of a llama GGUF tensor were permuted for llama.cpp's rotary
/// layout, and over how many heads.
#[derive(Clone, Copy)]
struct RotaryPermutation {
    q_heads: usize,
    kv_heads: usize,
}

/// Tensors of one GGUF file, read and dequantized one at a time.
pub struct GgufWeights {
    file: GgufFile,
    permutation: Option<RotaryPermutation>,
}

impl GgufWeights {
    pub fn new(file: GgufFile, config: &ModelConfig) -> Self {
        // convert_hf_to_gguf permutes q/k rows of llama (and Mistral-as-llama)
        // checkpoints; qwen2/qwen3 use the NeoX rotary layout and keep HF's.
        let permutation =
            (config.architecture == Architecture::Llama).then_some(RotaryPermutation {
                q_heads: config.num_heads,
                kv_heads: config.num_kv_heads,
            });
        GgufWeights { file, permutation }
    }

    pub fn contains(&self, hf_name: &str) -> bool {
        gguf_tensor_name(hf_name).is_some_and(|n| self.file.has_tensor(&n))
    }

    /// The tensor's dequantized values in f32 and HF layout (shape as stored).
    pub fn get_f32(&self, hf_name: &str, architecture: &str) -> Result<Tensor> {
        let missing = || EngineError::MissingTensor {
            name: hf_name.to_string(),
            architecture: architecture.to_string(),
        };
        let name = gguf_tensor_name(hf_name).ok_or_else(missing)?;
        if !self.file.has_tensor(&name) {
            return Err(missing());
        }
        let path = &self.file.path;
        let mut reader = File::open(path).map_err(|source| EngineError::Io {
            path: path.clone(),
            source,
        })?;
        let qtensor = self
            .file
            .content
            .tensor(&mut reader, &name, &Device::Cpu)
            .map_err(|e| EngineError::Gguf {
                path: path.clone(),
                message: format!("reading tensor {name:?}: {e}"),
            })?;
        let tensor = qtensor.dequantize(&Device::Cpu)?;
        let heads = match (self.permutation, hf_name) {
            (Some(p), n) if n.contains("self_attn.q_proj.") => Some(p.q_heads),
            (Some(p), n) if n.contains("self_attn.k_proj.") => Some(p.kv_heads),
            _ => None,
        };
        match heads {
            Some(heads) => unpermute_rotary_rows(&tensor, heads),
            None => Ok(tensor),
        }
    }

    /// The tensor in `dtype` on `device`, shape-checked against `shape`.
    pub fn get(
        &self,
        hf_name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
        architecture: &str,
    ) -> Result<Tensor> {
        let t = self.get_f32(hf_name, architecture)?;
        if t.dims() != shape {
            return Err(EngineError::TensorShape {
                name: hf_name.to_string(),
                found: t.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }
}

/// Undoes convert_hf_to_gguf's `permute`: within each head, llama.cpp stores
/// rows as (head_dim/2, 2) where HF has (2, head_dim/2). The inverse is
/// transformers' `reverse_permute_weights`: view rows as
/// (heads, head_dim/2, 2) and swap the last two axes.
fn unpermute_rotary_rows(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / heads / 2;
    let mut split = vec![heads, half, 2];
    split.extend_from_slice(&dims[1..]);
    Ok(t.reshape(split)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_for_a_layer() {
        assert_eq!(
            gguf_tensor_name("model.layers.12.self_attn.q_proj.bias").as_deref(),
            Some("blk.12.attn_q.bias")
        );
        assert_eq!(
            gguf_tensor_name("model.layers.0.mlp.down_proj.weight").as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(
            gguf_tensor_name("lm_head.weight").as_deref(),
            Some("output.weight")
        );
        assert_eq!(gguf_tensor_name("model.layers.0.unknown.weight"), None);
    }

    #[test]
    fn unpermute_inverts_the_converters_permute() {
        // convert_hf_to_gguf: reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2)
        let (heads, rows, cols) = (2, 8, 3);
        let hf = Tensor::arange(0f32, (rows * cols) as f32, &Device::Cpu)
            .unwrap()
            .reshape((rows, cols))
            .unwrap();
        let permuted = hf
            .reshape((heads, 2, rows / heads / 2, cols))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((rows, cols))
            .unwrap();
        let back = unpermute_rotary_rows(&permuted, heads).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), hf.to_vec2::<f32>().unwrap());
        assert_ne!(
            permuted.to_vec2::<f32>().unwrap(),
            hf.to_vec2::<f32>().unwrap()
        );
    }
}
