//! The encoder's element-wise steps as in-place candle ops spread over the
//! embedding pool's rayon threads. candle runs GELU and the attention's
//! scale, mask add and softmax as separate single-threaded passes, each
//! into a freshly allocated tensor, which left one of two threads idle for
//! much of a 256-token batch. Here each is one parallel pass over a tensor
//! the layer has just produced and nothing else holds.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp1, Layout, Result, Tensor};
use rayon::prelude::*;

/// Rows of this many floats or more are one rayon task each; shorter ones
/// are grouped so a task is never tiny.
const TASK_FLOATS: usize = 16 * 1024;

/// The contiguous f32 slice of a tensor's storage, or an error naming `op`.
fn f32_slice<'a>(op: &str, storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::msg(format!("{op}: tensor must be contiguous")))?;
    match storage {
        CpuStorage::F32(v) => Ok(&mut v[start..end]),
        other => Err(candle_core::Error::msg(format!(
            "{op}: f32 only, got {:?}",
            other.dtype()
        ))),
    }
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7 in exact
/// arithmetic, under 5e-7 in f32), which unlike libm's erff has no
/// branches per range.
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * (-ax * ax).exp();
    y.copysign(x)
}

/// `x · Φ(x)`, BERT's exact (erf) GELU.
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU (erf form) in place.
pub struct GeluErfInPlace;

impl InplaceOp1 for GeluErfInPlace {
    fn name(&self) -> &'static str {
        "embedder-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let xs = f32_slice(self.name(), storage, layout)?;
        xs.par_chunks_mut(TASK_FLOATS)
            .for_each(|chunk| chunk.iter_mut().for_each(|x| *x = gelu_erf(*x)));
        Ok(())
    }
}

/// Attention scores `[batch, heads, len, len]` to probabilities in place:
/// `softmax(scale · s)` over the keys a row's sequence has, 0 for padding.
pub struct MaskedSoftmaxInPlace<'a> {
    pub scale: f32,
    /// `[batch, len]`, true for a real token.
    pub keep: &'a [bool],
    pub heads: usize,
    pub len: usize,
}

impl MaskedSoftmaxInPlace<'_> {
    fn row(&self, row: usize, xs: &mut [f32]) {
        let batch = row / (self.heads * self.len);
        let keep = &self.keep[batch * self.len..(batch + 1) * self.len];
        let mut max = f32::NEG_INFINITY;
        for (x, &k) in xs.iter().zip(keep) {
            if k {
                max = max.max(*x);
            }
        }
        let mut sum = 0.0;
        for (x, &k) in xs.iter_mut().zip(keep) {
            *x = if k {
                ((*x - max) * self.scale).exp()
            } else {
                0.0
            };
            sum += *x;
        }
        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        xs.iter_mut().for_each(|x| *x *= inv);
    }
}

impl InplaceOp1 for MaskedSoftmaxInPlace<'_> {
    fn name(&self) -> &'static str {
        "embedder-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let len = self.len;
        let xs = f32_slice(self.name(), storage, layout)?;
        if xs.len() != self.keep.len() / len * self.heads * len * len {
            return Err(candle_core::Error::msg(
                "embedder-masked-softmax: scores are not [batch, heads, len, len]",
            ));
        }
        let rows_per_task = (TASK_FLOATS / len).max(1);
        xs.par_chunks_mut(rows_per_task * len)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, row) in chunk.chunks_mut(len).enumerate() {
                    self.row(task * rows_per_task + i, row);
                }
            });
        Ok(())
    }
}

/// Applies `op` to `xs` in place and returns it (for chaining).
pub fn in_place(xs: Tensor, op: &impl InplaceOp1) -> Result<Tensor> {
    xs.inplace_op1(op)?;
    Ok(xs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_erf_is_within_5e_7_of_libm() {
        let worst = (-6000..=6000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| (erf(x) - candle_core::cpu::erf::erf_f64(x as f64) as f32).abs())
            .fold(0f32, f32::max);
        assert!(worst < 5e-7, "max |erf error| {worst}");
    }
}
