//! The residual add and the RMSNorm after it, fused: `s = x + h` and
//! `s / rms(s) · w` in one pass over the rows, in the activations' dtype
//! with f32 maths. candle's bf16 add converts lanes through a call per
//! vector (its crate is not built with AVX512-BF16); with the matmuls on AMX
//! the two residual adds per layer were 16 % of a bf16 prefill.

use crate::element::Element;
use crate::error::KernelError;
use candle_core::{Storage, Tensor, WithDType};
use half::{bf16, f16};
use rayon::prelude::*;

const OP: &str = "add_rms_norm";

/// The residual sum and its normalisation.
pub struct AddNorm {
    /// `x + h`, the residual stream the next block adds to.
    pub sum: Tensor,
    /// `(x + h) / sqrt(mean((x + h)²) + eps) · weight`.
    pub normed: Tensor,
}

/// `x + h` and its RMSNorm by `weight`, for `x` and `h` `[m, d]` and
/// `weight` `[d]`, all of one dtype (f32, bf16 or f16). CPU tensors only.
pub fn add_rms_norm(
    x: &Tensor,
    h: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> candle_core::Result<AddNorm> {
    let (m, d) = x.dims2()?;
    for (what, t, want) in [("h", h, vec![m, d]), ("weight", weight, vec![d])] {
        if t.dims() != want.as_slice() {
            return Err(KernelError::ShapeMismatch {
                op: OP,
                what,
                expected: format!("{want:?} (from x)"),
                got: t.dims().to_vec(),
            }
            .into());
        }
    }
    let (x, h, weight) = (x.contiguous()?, h.contiguous()?, weight.contiguous()?);
    match x.dtype() {
        candle_core::DType::F32 => typed::<f32>(&x, &h, &weight, eps),
        candle_core::DType::BF16 => typed::<bf16>(&x, &h, &weight, eps),
        candle_core::DType::F16 => typed::<f16>(&x, &h, &weight, eps),
        dtype => Err(KernelError::UnsupportedOperandDtype {
            op: OP,
            what: "x",
            dtype,
        }
        .into()),
    }
}

fn typed<X: Element + WithDType>(
    x: &Tensor,
    h: &Tensor,
    w: &Tensor,
    eps: f32,
) -> candle_core::Result<AddNorm> {
    let (m, d) = x.dims2()?;
    let (sum, normed) = {
        let (xs, xl) = x.storage_and_layout();
        let (hs, hl) = h.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let get = |what: &'static str,
                   s: &Storage,
                   l: &candle_core::Layout|
         -> candle_core::Result<*const X> {
            let Storage::Cpu(cpu) = s else {
                return Err(KernelError::BadStrides {
                    op: OP,
                    what,
                    requirement: "on the CPU",
                }
                .into());
            };
            let Some(v) = X::slice(cpu) else {
                return Err(KernelError::UnsupportedOperandDtype {
                    op: OP,
                    what,
                    dtype: cpu_dtype(cpu),
                }
                .into());
            };
            Ok(v[l.start_offset()..].as_ptr())
        };
        let (xp, hp, wp) = (
            get("x", &xs, xl)?,
            get("h", &hs, hl)?,
            get("weight", &ws, wl)?,
        );
        // SAFETY: each tensor is contiguous with the checked shape, so its
        // storage holds `m * d` (resp. `d`) elements from its start offset;
        // the storage guards live until the end of this block.
        let (xv, hv, wv) = unsafe {
            (
                std::slice::from_raw_parts(xp, m * d),
                std::slice::from_raw_parts(hp, m * d),
                std::slice::from_raw_parts(wp, d),
            )
        };
        run(xv, hv, wv, d, eps)
    };
    Ok(AddNorm {
        sum: Tensor::from_vec(sum, (m, d), x.device())?,
        normed: Tensor::from_vec(normed, (m, d), x.device())?,
    })
}

fn cpu_dtype(s: &candle_core::CpuStorage) -> candle_core::DType {
    use candle_core::backend::BackendStorage;
    s.dtype()
}

/// Rows per rayon task (a few hundred KB of traffic per wake-up).
const ROWS_PER_TASK: usize = 16;

fn run<X: Element>(x: &[X], h: &[X], w: &[X], d: usize, eps: f32) -> (Vec<X>, Vec<X>) {
    let mut sum = vec![X::from_f32(0.0); x.len()];
    let mut normed = vec![X::from_f32(0.0); x.len()];
    if d == 0 {
        return (sum, normed);
    }
    let w: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let chunk = ROWS_PER_TASK * d;
    sum.par_chunks_mut(chunk)
        .zip(normed.par_chunks_mut(chunk))
        .zip(x.par_chunks(chunk).zip(h.par_chunks(chunk)))
        .for_each(|((s, n), (x, h))| {
            let mut row = vec![0f32; d];
            for (((s, n), x), h) in s
                .chunks_exact_mut(d)
                .zip(n.chunks_exact_mut(d))
                .zip(x.chunks_exact(d))
                .zip(h.chunks_exact(d))
            {
                // The sum is rounded to `X` first: the residual stream holds
                // `X`, and the norm sees what the next add will.
                for ((r, s), (a, b)) in row.iter_mut().zip(s.iter_mut()).zip(x.iter().zip(h)) {
                    *s = X::from_f32(a.to_f32() + b.to_f32());
                    *r = s.to_f32();
                }
                let mean_sq = crate::vecmath::dot::<false>(&row, &row) / d as f32;
                let inv = 1.0 / (mean_sq + eps).sqrt();
                for ((n, r), w) in n.iter_mut().zip(&row).zip(&w) {
                    *n = X::from_f32(r * inv * w);
                }
            }
        });
    (sum, normed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn max_abs(t: &Tensor) -> f32 {
        let t = t.to_dtype(DType::F32).unwrap().abs().unwrap();
        t.flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Against candle's add and `rms_norm`, every dtype, with several
    /// row tasks; and a shape error that names the operand.
    #[test]
    fn matches_candle_in_every_dtype() {
        let dev = Device::Cpu;
        let (m, d) = (37, 72);
        let x = Tensor::randn(0f32, 2.0, (m, d), &dev).unwrap();
        let h = Tensor::randn(0f32, 2.0, (m, d), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.5, d, &dev).unwrap();
        // One rounding of the output apart, relative to the largest value.
        for (dtype, tol) in [
            (DType::F32, 1e-6),
            (DType::BF16, 2f32.powi(-7)),
            (DType::F16, 2f32.powi(-10)),
        ] {
            let [x, h, w] = [&x, &h, &w].map(|t| t.to_dtype(dtype).unwrap());
            let got = add_rms_norm(&x, &h, &w, 1e-6).unwrap();
            let sum = (&x + &h).unwrap();
            let normed = candle_nn::ops::rms_norm(&sum, &w, 1e-6).unwrap();
            for (name, a, b) in [("sum", &got.sum, &sum), ("normed", &got.normed, &normed)] {
                let diff = max_abs(
                    &(a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap(),
                );
                let scale = max_abs(b);
                assert!(
                    diff <= tol * scale,
                    "{dtype:?} {name}: max diff {diff} of {scale}"
                );
            }
        }
        let short = Tensor::zeros(d - 1, DType::F32, &dev).unwrap();
        let msg = add_rms_norm(&x, &h, &short, 1e-6)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("weight"), "{msg}");
    }
}
