//! The decoder stack all supported architectures share: embeddings, N blocks
//! of (RMSNorm → attention → residual, RMSNorm → MLP → residual), final norm
//! and the LM head. Architecture files only choose the [`DecoderSpec`].

use candle_core::{DType, Device, Module, Tensor};

use super::attention::Attention;
use super::layers::{Linear, Mlp, RmsNorm};
use super::rotary::Rotary;
use super::{DecoderSpec, StepContext};
use crate::batch::ForwardBatch;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::weights::Weights;

/// One decoder block's layers, borrowed (see [`CausalLm::parts`]).
pub struct LayerParts<'a> {
    pub input_norm: &'a RmsNorm,
    pub attn: &'a Attention,
    pub post_attn_norm: &'a RmsNorm,
    pub mlp: &'a Mlp,
}

/// A loaded model's weights as its forward pass uses them (q/k/v and
/// gate/up already fused), for a runner on another device to copy.
pub struct DecoderParts<'a> {
    pub embed: &'a Tensor,
    pub layers: Vec<LayerParts<'a>>,
    pub norm: &'a RmsNorm,
    /// The LM head; its weight is `embed` itself when the config ties them.
    pub lm_head: &'a Linear,
    pub rotary: &'a Rotary,
}

#[derive(Clone)]
struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    mlp: Mlp,
}

#[derive(Clone)]
pub struct CausalLm {
    config: ModelConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    dtype: DType,
    device: Device,
}

impl CausalLm {
    pub fn load(
        config: &ModelConfig,
        spec: &DecoderSpec,
        w: &Weights,
        device: &Device,
    ) -> Result<Self> {
        let (h, eps) = (config.hidden_size, config.rms_norm_eps);
        let embed = w.get("model.embed_tokens.weight", &[config.vocab_size, h])?;
        let blocks = (0..config.num_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(Block {
                    input_norm: RmsNorm::load(w, &format!("{p}.input_layernorm.weight"), h, eps)?,
                    attn: Attention::load(w, &format!("{p}.self_attn"), config, spec, i)?,
                    post_attn_norm: RmsNorm::load(
                        w,
                        &format!("{p}.post_attention_layernorm.weight"),
                        h,
                        eps,
                    )?,
                    mlp: Mlp::load(w, &format!("{p}.mlp"), h, config.intermediate_size)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Some tied checkpoints still ship lm_head.weight; the tie wins, as in transformers.
        let lm_head = if config.tie_word_embeddings {
            Linear::from_weight(embed.clone())
        } else {
            Linear::load(w, "lm_head", h, config.vocab_size, false)?
        };
        Ok(CausalLm {
            config: config.clone(),
            embed,
            blocks,
            norm: RmsNorm::load(w, "model.norm.weight", h, eps)?,
            lm_head,
            rotary: Rotary::new(&config.rope, config.head_dim),
            dtype: w.dtype(),
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Packs every projection for this CPU's kernels, where they read a
    /// packed copy (once; clones share it).
    pub fn pack_ahead(&self) {
        let started = std::time::Instant::now();
        let linears = self
            .blocks
            .iter()
            .flat_map(|b| [b.attn.qkv(), b.attn.o_proj(), b.mlp.gate_up(), b.mlp.down()])
            .chain([&self.lm_head]);
        let bytes: usize = linears
            .map(|l| {
                l.pack_ahead();
                l.packed_bytes()
            })
            .sum();
        if bytes > 0 {
            tracing::info!(
                mib = bytes >> 20,
                seconds = started.elapsed().as_secs_f32(),
                "weights packed for this CPU's kernels (TANDEM_CPU_PREPACK=0 skips it)"
            );
        }
    }

    pub fn parts(&self) -> DecoderParts<'_> {
        DecoderParts {
            embed: &self.embed,
            layers: self
                .blocks
                .iter()
                .map(|b| LayerParts {
                    input_norm: &b.input_norm,
                    attn: &b.attn,
                    post_attn_norm: &b.post_attn_norm,
                    mlp: &b.mlp,
                })
                .collect(),
            norm: &self.norm,
            lm_head: &self.lm_head,
            rotary: &self.rotary,
        }
    }

    /// Runs one mixed varlen batch and returns f32 logits `[logits_indices.len(), vocab]`.
    pub fn forward(&self, batch: &ForwardBatch, kv_cache: &KvCache) -> Result<Tensor> {
        let n = batch.token_ids.len();
        let ids = Tensor::from_slice(&batch.token_ids, n, &self.device)?;
        let (cos, sin) = self
            .rotary
            .cos_sin(&batch.positions, self.dtype, &self.device)?;
        let ctx = StepContext {
            cos,
            sin,
            attn: &batch.attn,
            kv_cache,
        };
        let mut x = self.embed.index_select(&ids, 0)?;
        // The MLP output not yet added to the residual stream `x`: each add
        // is fused with the norm that follows it.
        let mut pending: Option<Tensor> = None;
        for block in &self.blocks {
            let normed = match pending.take() {
                None => block.input_norm.forward(&x)?,
                Some(h) => {
                    let (sum, normed) = block.input_norm.add_and_norm(&x, &h)?;
                    x = sum;
                    normed
                }
            };
            let h = block.attn.forward(&normed, &ctx)?;
            let (x1, normed) = block.post_attn_norm.add_and_norm(&x, &h)?;
            pending = Some(block.mlp.forward(&normed)?);
            x = x1;
        }
        let idx = Tensor::from_slice(
            &batch.logits_indices,
            batch.logits_indices.len(),
            &self.device,
        )?;
        // Only the rows that yield logits need the last add.
        let mut last = x.index_select(&idx, 0)?;
        if let Some(h) = pending {
            last = (last + h.index_select(&idx, 0)?)?;
        }
        let logits = self.lm_head.forward(&self.norm.forward(&last)?)?;
        Ok(logits.to_dtype(DType::F32)?)
    }
}
