//! Self-attention over the paged KV cache: project, (normalise q/k), rotate,
//! write the new K/V into their slots, then attend through the block tables.

use candle_core::{Module, Tensor};
use tandem_kernels::{paged_attention, reshape_and_cache};

use super::layers::{Linear, RmsNorm};
use super::rotary::Rotary;
use super::{DecoderSpec, StepContext};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::Weights;

#[derive(Clone)]
pub struct Attention {
    qkv: Linear,
    o_proj: Linear,
    /// Qwen3's per-head RMSNorm on queries and keys, applied before rotation.
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    layer: usize,
    scale: f32,
    sliding_window: Option<usize>,
}

impl Attention {
    pub fn load(
        w: &Weights,
        prefix: &str,
        cfg: &ModelConfig,
        spec: &DecoderSpec,
        layer: usize,
    ) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let q_dim = cfg.num_heads * d;
        let kv_dim = cfg.num_kv_heads * d;
        let (q, k, v) = (
            format!("{prefix}.q_proj"),
            format!("{prefix}.k_proj"),
            format!("{prefix}.v_proj"),
        );
        let qkv = Linear::load_fused(
            w,
            &[(&q, q_dim), (&k, kv_dim), (&v, kv_dim)],
            h,
            spec.qkv_bias,
        )?;
        let o_proj = Linear::load(w, &format!("{prefix}.o_proj"), q_dim, h, spec.o_bias)?;
        let qk_norm = if spec.qk_norm {
            Some((
                RmsNorm::load(w, &format!("{prefix}.q_norm.weight"), d, cfg.rms_norm_eps)?,
                RmsNorm::load(w, &format!("{prefix}.k_norm.weight"), d, cfg.rms_norm_eps)?,
            ))
        } else {
            None
        };
        Ok(Attention {
            qkv,
            o_proj,
            qk_norm,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: d,
            layer,
            scale: 1.0 / (d as f32).sqrt(),
            sliding_window: cfg.sliding_window,
        })
    }

    /// The fused q/k/v projection (`[(heads + 2 * kv_heads) * head_dim, hidden]`).
    pub fn qkv(&self) -> &Linear {
        &self.qkv
    }

    pub fn o_proj(&self) -> &Linear {
        &self.o_proj
    }

    /// Qwen3's per-head norms of q and k.
    pub fn qk_norm(&self) -> Option<&(RmsNorm, RmsNorm)> {
        self.qk_norm.as_ref()
    }

    /// `x`: `[tokens, hidden]` → `[tokens, hidden]`.
    pub(crate) fn forward(&self, x: &Tensor, ctx: &StepContext) -> Result<Tensor> {
        let tokens = x.dim(0)?;
        let (hq, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let qkv = self.qkv.forward(x)?;
        let mut q = qkv.narrow(1, 0, hq * d)?.reshape((tokens, hq, d))?;
        let mut k = qkv.narrow(1, hq * d, hkv * d)?.reshape((tokens, hkv, d))?;
        let v = qkv
            .narrow(1, (hq + hkv) * d, hkv * d)?
            .reshape((tokens, hkv, d))?
            .contiguous()?;
        if let Some((qn, kn)) = &self.qk_norm {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let q = Rotary::apply(&q, &ctx.cos, &ctx.sin)?;
        let k = Rotary::apply(&k, &ctx.cos, &ctx.sin)?;
        let kv = ctx.kv_cache;
        reshape_and_cache(
            &kv.arena,
            &k,
            &v,
            &kv.layout,
            self.layer,
            &ctx.attn.slot_mapping,
        )?;
        let out = paged_attention(
            &q,
            &kv.arena,
            &kv.layout,
            self.layer,
            ctx.attn,
            self.scale,
            self.sliding_window,
        )?;
        Ok(self.o_proj.forward(&out.reshape((tokens, hq * d))?)?)
    }
}
