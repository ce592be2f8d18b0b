//! Rotary position embeddings (the "rotate half" form transformers uses).
//! cos/sin are computed per batch from the tokens' own positions, so there is
//! no table sized by `max_position_embeddings` and any mix of positions in a
//! varlen batch is one gather-free computation.

use candle_core::{DType, Device, Tensor};

use crate::config::{RopeConfig, RopeScaling};

/// Per-token rotation tables (see [`Rotary::tables`]).
pub struct RotaryTables {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

#[derive(Clone)]
pub struct Rotary {
    /// One inverse frequency per pair of dimensions, already scaled.
    inv_freq: Vec<f32>,
}

impl Rotary {
    pub fn new(rope: &RopeConfig, head_dim: usize) -> Self {
        // f32 arithmetic on purpose: transformers builds inv_freq in float32,
        // and parity to 1e-4 in the logits depends on matching it.
        let base = rope.theta as f32;
        let mut inv_freq: Vec<f32> = (0..head_dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        match rope.scaling {
            RopeScaling::None => {}
            RopeScaling::FrequencyFactors(ref factors) => {
                for (f, d) in inv_freq.iter_mut().zip(factors) {
                    *f /= d;
                }
            }
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor as f32),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high, orig) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    original_max_position_embeddings as f32,
                );
                let low_wavelen = orig / low;
                let high_wavelen = orig / high;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    if wavelen > low_wavelen {
                        // Long wavelengths: fully interpolated.
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        // In between: blend interpolated and original.
                        let smooth = (orig / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        Rotary { inv_freq }
    }

    /// cos and sin, each `[positions.len(), head_dim / 2]` in `dtype`.
    pub fn cos_sin(
        &self,
        positions: &[u32],
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let RotaryTables { cos, sin } = self.tables(positions);
        let shape = (positions.len(), self.inv_freq.len());
        let cos = Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// cos and sin as f32 values, row-major `[positions.len(), head_dim / 2]`.
    pub fn tables(&self, positions: &[u32]) -> RotaryTables {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        RotaryTables { cos, sin }
    }

    /// Rotates `x` of shape `[tokens, heads, head_dim]`.
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?.unsqueeze(0)?;
        candle_nn::rotary_emb::rope_thd(&x, cos, sin)?.squeeze(0)
    }
}
