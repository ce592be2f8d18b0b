//! A random-weight checkpoint of a given shape, written as bf16 safetensors
//! (as real Qwen2.5 checkpoints ship) so the load path is the real one.

use half::bf16;
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use std::path::Path;

use candle_core::{DType, Device};
use tandem_engine::config::ModelConfig;
use tandem_engine::models::{CausalLm, DecoderSpec};
use tandem_engine::weights::Weights;

/// Qwen2.5-0.5B's shape (494 M parameters, tied embeddings).
pub fn qwen25_05b_config() -> String {
    serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": true, "hidden_act": "silu", "torch_dtype": "bfloat16"
    })
    .to_string()
}

fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (q, kv) = (cfg.num_heads * d, cfg.num_kv_heads * d);
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
    )];
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("self_attn.q_proj.weight", vec![q, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.q_proj.bias", vec![q]),
            ("self_attn.k_proj.bias", vec![kv]),
            ("self_attn.v_proj.bias", vec![kv]),
            ("self_attn.o_proj.weight", vec![h, q]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            out.push((format!("{p}.{n}"), s));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    out
}

/// Writes `model.safetensors` for `cfg` into `dir` (Qwen2 tensor names).
pub fn write(dir: &Path, cfg: &ModelConfig, seed: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let shapes = tensor_shapes(cfg);
    let buffers: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let norm = name.ends_with("norm.weight");
            let scale = 1.0 / (*shape.last().unwrap() as f32).sqrt();
            let mut bytes = Vec::with_capacity(n * 2);
            for _ in 0..n {
                let v = if norm {
                    1.0
                } else {
                    rng.random_range(-scale..scale)
                };
                bytes.extend_from_slice(&bf16::from_f32(v).to_le_bytes());
            }
            bytes
        })
        .collect();
    let views = shapes
        .iter()
        .zip(&buffers)
        .map(|((name, shape), b)| {
            Ok((
                name.clone(),
                TensorView::new(safetensors::Dtype::BF16, shape.clone(), b)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))?;
    Ok(())
}

/// The Qwen2.5-0.5B-shaped config, writing its random checkpoint into `dir`
/// unless it is already there.
pub fn ensure(dir: &Path) -> anyhow::Result<ModelConfig> {
    let cfg = ModelConfig::from_json(&qwen25_05b_config())?;
    if !dir.join("model.safetensors").exists() {
        eprintln!("writing random-weight checkpoint to {} ...", dir.display());
        write(dir, &cfg, 0)?;
    }
    Ok(cfg)
}

/// Loads the checkpoint in `dir` for compute in `dtype`.
pub fn load(dir: &Path, cfg: &ModelConfig, dtype: DType) -> anyhow::Result<CausalLm> {
    let w = Weights::open(
        &[dir.join("model.safetensors")],
        dtype,
        &Device::Cpu,
        cfg.architecture.hf_name(),
    )?;
    Ok(CausalLm::load(
        cfg,
        &DecoderSpec::for_config(cfg),
        &w,
        &Device::Cpu,
    )?)
}
