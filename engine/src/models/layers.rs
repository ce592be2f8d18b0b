//! Layers every supported decoder shares: linear (optionally fused), RMSNorm
//! and the SwiGLU MLP.

use candle_core::{Module, Tensor};
use tandem_kernels::LinearWeight;

use crate::error::Result;
use crate::weights::Weights;

/// `y = x Wᵀ (+ b)`. Several HF projections can be fused into one matrix so a
/// step reads the activations once and runs one larger matmul. The weight
/// may keep a packed copy for the prefill kernel (see [`LinearWeight`]).
#[derive(Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `prefix.weight` ([out, in]) and, when `bias`, `prefix.bias`.
    pub fn load(
        w: &Weights,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        Self::load_fused(w, &[(prefix, out_dim)], in_dim, bias)
    }

    /// Concatenates the projections `parts` (prefix, out_dim) along the output
    /// dimension; callers split the result with `narrow`.
    pub fn load_fused(
        w: &Weights,
        parts: &[(&str, usize)],
        in_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weights = parts
            .iter()
            .map(|(p, out)| w.get(&format!("{p}.weight"), &[*out, in_dim]))
            .collect::<Result<Vec<_>>>()?;
        let biases = if bias {
            let b = parts
                .iter()
                .map(|(p, out)| w.get(&format!("{p}.bias"), &[*out]))
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::cat(&b, 0)?)
        } else {
            None
        };
        Ok(Linear {
            weight: LinearWeight::new(Tensor::cat(&weights, 0)?),
            bias: biases,
        })
    }

    pub fn from_weight(weight: Tensor) -> Self {
        Linear {
            weight: LinearWeight::new(weight),
            bias: None,
        }
    }

    /// Packs the weight for this CPU's kernels now, where they read a
    /// packed copy (see [`LinearWeight::pack_ahead`]).
    pub fn pack_ahead(&self) {
        self.weight.pack_ahead()
    }

    /// Bytes of the packed copy (0 while none is made).
    pub fn packed_bytes(&self) -> usize {
        self.weight.packed_bytes()
    }

    /// `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.weight.tensor()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    /// Our own kernel: it streams the weight once per step whatever the
    /// batch, and reads bf16/f16 weights without converting them first.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.weight.forward(x, self.bias.as_ref())
    }
}

#[derive(Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: w.get(name, &[dim])?,
            eps: eps as f32,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl RmsNorm {
    /// The residual add before this norm, fused with it on the CPU:
    /// `(x + h, norm(x + h))`.
    pub fn add_and_norm(&self, x: &Tensor, h: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        if x.device().is_cpu() {
            let out = tandem_kernels::add_rms_norm(x, h, &self.weight, self.eps)?;
            return Ok((out.sum, out.normed));
        }
        let sum = (x + h)?;
        let normed = self.forward(&sum)?;
        Ok((sum, normed))
    }
}

impl Module for RmsNorm {
    /// Normalises over the last dimension (statistics in f32 for any dtype).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`, gate and up fused into one matmul.
#[derive(Clone)]
pub struct Mlp {
    gate_up: Linear,
    down: Linear,
    intermediate: usize,
}

impl Mlp {
    pub fn load(w: &Weights, prefix: &str, hidden: usize, intermediate: usize) -> Result<Self> {
        let gate = format!("{prefix}.gate_proj");
        let up = format!("{prefix}.up_proj");
        Ok(Mlp {
            gate_up: Linear::load_fused(
                w,
                &[(&gate, intermediate), (&up, intermediate)],
                hidden,
                false,
            )?,
            down: Linear::load(
                w,
                &format!("{prefix}.down_proj"),
                intermediate,
                hidden,
                false,
            )?,
            intermediate,
        })
    }

    /// The fused `[2 * intermediate, hidden]` gate/up projection (gate first).
    pub fn gate_up(&self) -> &Linear {
        &self.gate_up
    }

    pub fn down(&self) -> &Linear {
        &self.down
    }
}

/// The MLP's widest activation (the fused gate/up output) is kept under
/// this many bytes per pass: a long prefill runs the MLP in row chunks.
/// Below glibc's largest mmap threshold (32 MiB) the buffers are reused
/// from the heap step after step; above it every pass mapped and
/// page-faulted ~80 MB anew for a 2,048-token step of a 0.5B model.
const MLP_CHUNK_BYTES: usize = 24 << 20;

impl Mlp {
    /// Rows per MLP pass for activations of `elem_bytes` bytes.
    fn chunk_rows(&self, elem_bytes: usize) -> usize {
        (MLP_CHUNK_BYTES / (2 * self.intermediate * elem_bytes).max(1)).max(64)
    }

    fn forward_rows(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gu = self.gate_up.forward(x)?;
        let h = match gu.device().is_cpu() {
            true => tandem_kernels::silu_mul(&gu)?,
            false => {
                let gate = gu.narrow(1, 0, self.intermediate)?;
                let up = gu.narrow(1, self.intermediate, self.intermediate)?;
                (candle_nn::ops::silu(&gate)? * up)?
            }
        };
        self.down.forward(&h)
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_in_chunks(x, self.chunk_rows(x.dtype().size_in_bytes()))
    }
}

impl Mlp {
    fn forward_in_chunks(&self, x: &Tensor, chunk: usize) -> candle_core::Result<Tensor> {
        let rows = x.dim(0)?;
        if rows <= chunk {
            return self.forward_rows(x);
        }
        let parts = (0..rows)
            .step_by(chunk)
            .map(|start| self.forward_rows(&x.narrow(0, start, chunk.min(rows - start))?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&parts, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// A long prefill's MLP, run in row chunks, equals the MLP run whole.
    #[test]
    fn mlp_in_row_chunks_equals_one_pass() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (hidden, intermediate, rows) = (24, 40, 67);
        let mlp = Mlp {
            gate_up: Linear::from_weight(Tensor::randn(
                0f32,
                1.0,
                (2 * intermediate, hidden),
                &dev,
            )?),
            down: Linear::from_weight(Tensor::randn(0f32, 1.0, (hidden, intermediate), &dev)?),
            intermediate,
        };
        let x = Tensor::randn(0f32, 1.0, (rows, hidden), &dev)?;
        let whole = mlp.forward_in_chunks(&x, rows)?;
        let max_abs = |t: &Tensor| -> candle_core::Result<f32> {
            t.abs()?
                .flatten_all()?
                .max(0)?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()
        };
        let scale = max_abs(&whole)?;
        // Chunks of up to 8 rows take the decode kernels, which sum in
        // another order: equal up to f32 rounding, not bit for bit.
        for chunk in [1, 7, 33, 66] {
            let parts = mlp.forward_in_chunks(&x, chunk)?;
            assert_eq!(parts.dims(), &[rows, hidden]);
            let diff = max_abs(&(&parts - &whole)?)?;
            assert!(diff <= 1e-5 * scale, "chunk {chunk}: {diff} of {scale}");
        }
        Ok(())
    }
}
