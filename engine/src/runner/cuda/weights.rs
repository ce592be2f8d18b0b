//! The model's weights copied to the GPU once, in the compute dtype, in the
//! layout the forward pass uses (q/k/v fused, gate/up fused), one tensor at
//! a time so the host never holds a second copy of the whole model.

use std::sync::Arc;

use candle_core::Tensor;
use cudarc::driver::{CudaSlice, CudaStream};

use super::RunnerElement;
use crate::models::{CausalLm, Linear};

/// `Err` carries a message; the runner adds the device to it.
pub(super) type Upload<T> = std::result::Result<T, String>;

/// One linear layer: `[out, in]` weight, optional `[out]` bias.
pub(super) struct DeviceLinear<T> {
    pub weight: CudaSlice<T>,
    pub bias: Option<CudaSlice<T>>,
    pub out_dim: usize,
    pub in_dim: usize,
}

pub(super) struct DeviceLayer<T> {
    pub input_norm: CudaSlice<T>,
    pub qkv: DeviceLinear<T>,
    pub o_proj: DeviceLinear<T>,
    /// Qwen3's per-head q and k norms (`[head_dim]` each).
    pub qk_norm: Option<QkNorm<T>>,
    pub post_attn_norm: CudaSlice<T>,
    pub gate_up: DeviceLinear<T>,
    pub down: DeviceLinear<T>,
}

pub(super) struct QkNorm<T> {
    pub q: CudaSlice<T>,
    pub k: CudaSlice<T>,
}

pub(super) struct DeviceWeights<T> {
    /// `[vocab, hidden]`.
    pub embed: CudaSlice<T>,
    pub layers: Vec<DeviceLayer<T>>,
    pub norm: CudaSlice<T>,
    /// `None`: the head is tied to `embed`.
    pub lm_head: Option<CudaSlice<T>>,
}

impl<T: RunnerElement> DeviceWeights<T> {
    pub fn upload(stream: &Arc<CudaStream>, model: &CausalLm) -> Upload<Self> {
        let parts = model.parts();
        let layers = parts
            .layers
            .iter()
            .map(|l| {
                let qk_norm = match l.attn.qk_norm() {
                    Some((q, k)) => Some(QkNorm {
                        q: tensor(stream, q.weight())?,
                        k: tensor(stream, k.weight())?,
                    }),
                    None => None,
                };
                Ok(DeviceLayer {
                    input_norm: tensor(stream, l.input_norm.weight())?,
                    qkv: linear(stream, l.attn.qkv())?,
                    o_proj: linear(stream, l.attn.o_proj())?,
                    qk_norm,
                    post_attn_norm: tensor(stream, l.post_attn_norm.weight())?,
                    gate_up: linear(stream, l.mlp.gate_up())?,
                    down: linear(stream, l.mlp.down())?,
                })
            })
            .collect::<Upload<Vec<_>>>()?;
        let lm_head = if model.config().tie_word_embeddings {
            None
        } else {
            Some(tensor(stream, parts.lm_head.weight())?)
        };
        Ok(DeviceWeights {
            embed: tensor(stream, parts.embed)?,
            layers,
            norm: tensor(stream, parts.norm.weight())?,
            lm_head,
        })
    }
}

/// Copies one host tensor to the device as `T`.
fn tensor<T: RunnerElement>(stream: &Arc<CudaStream>, t: &Tensor) -> Upload<CudaSlice<T>> {
    let host = t
        .to_dtype(T::DTYPE)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<T>())
        .map_err(|e| format!("reading a {:?} weight for upload: {e}", t.shape()))?;
    stream
        .clone_htod(&host)
        .map_err(|e| format!("copying a {:?} weight to the GPU: {e}", t.shape()))
}

fn linear<T: RunnerElement>(stream: &Arc<CudaStream>, l: &Linear) -> Upload<DeviceLinear<T>> {
    let (out_dim, in_dim) = l
        .weight()
        .dims2()
        .map_err(|e| format!("a linear weight is not a matrix: {e}"))?;
    Ok(DeviceLinear {
        weight: tensor(stream, l.weight())?,
        bias: l.bias().map(|b| tensor(stream, b)).transpose()?,
        out_dim,
        in_dim,
    })
}
