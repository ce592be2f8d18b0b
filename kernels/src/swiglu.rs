//! SwiGLU's activation, fused: `silu(gate) · up` from the fused gate/up
//! product `[m, 2i]` (gate columns first) into `[m, i]`, in one pass in the
//! activations' dtype, maths in f32. Separately, candle's `silu` copies the
//! strided gate half, calls libm's `expf` per element and the product makes
//! a third pass; in a bf16 prefill those passes together cost more than the
//! AMX matmuls around them. The exponential here is a polynomial the
//! compiler vectorises (relative error below 3e-7, about 2 ulp, over the clamped range).

use crate::cpu::gemm::Isa;
use crate::element::Element;
use crate::error::KernelError;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

const OP: &str = "silu_mul";

/// `silu(g) · u` for `gate_up = [g | u]` of shape `[m, 2i]`; returns `[m, i]`
/// in `gate_up`'s dtype (f32, bf16 or f16). CPU tensors only.
pub fn silu_mul(gate_up: &Tensor) -> candle_core::Result<Tensor> {
    let (_, width) = gate_up.dims2()?;
    if !width.is_multiple_of(2) {
        return Err(KernelError::ShapeMismatch {
            op: OP,
            what: "gate_up",
            expected: "[m, 2 * intermediate] (gate and up side by side)".into(),
            got: gate_up.dims().to_vec(),
        }
        .into());
    }
    gate_up.contiguous()?.apply_op1_no_bwd(&SiluMul)
}

struct SiluMul;

impl CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, width) = l.shape().dims2()?;
        let Some((start, end)) = l.contiguous_offsets() else {
            return Err(KernelError::BadStrides {
                op: OP,
                what: "gate_up",
                requirement: "contiguous",
            }
            .into());
        };
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(run(&v[start..end], width)),
            CpuStorage::BF16(v) => CpuStorage::BF16(run::<bf16>(&v[start..end], width)),
            CpuStorage::F16(v) => CpuStorage::F16(run::<f16>(&v[start..end], width)),
            other => {
                return Err(KernelError::UnsupportedOperandDtype {
                    op: OP,
                    what: "gate_up",
                    dtype: other.dtype(),
                }
                .into())
            }
        };
        Ok((out, Shape::from((m, width / 2))))
    }
}

/// Rows per rayon task: enough work (~64 K elements) to pay for a wake-up.
const MIN_ELEMS_PER_TASK: usize = 1 << 16;

fn run<X: Element>(gu: &[X], width: usize) -> Vec<X> {
    let half = width / 2;
    let mut out = vec![X::from_f32(0.0); gu.len() / 2];
    if half == 0 {
        return out;
    }
    let rows_per_task = MIN_ELEMS_PER_TASK.div_ceil(half).max(1);
    let simd = Isa::detect() != Isa::Portable;
    out.par_chunks_mut(rows_per_task * half)
        .zip(gu.par_chunks(rows_per_task * width))
        .for_each(|(o, g)| {
            for (o, row) in o.chunks_exact_mut(half).zip(g.chunks_exact(width)) {
                let (gate, up) = row.split_at(half);
                row_kernel(simd, gate, up, o);
            }
        });
    out
}

fn row_kernel<X: Element>(simd: bool, gate: &[X], up: &[X], out: &mut [X]) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` means `Isa::detect` found AVX2 and FMA.
        return unsafe { row_avx2(gate, up, out) };
    }
    let _ = simd;
    row_plain(gate, up, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2<X: Element>(gate: &[X], up: &[X], out: &mut [X]) {
    row_plain(gate, up, out)
}

/// Eight lanes at a time, so the loop vectorises; the tail one by one.
#[inline(always)]
fn row_plain<X: Element>(gate: &[X], up: &[X], out: &mut [X]) {
    const L: usize = 8;
    let n = out.len().min(gate.len()).min(up.len());
    let full = n - n % L;
    for i in (0..full).step_by(L) {
        let g: [f32; L] = std::array::from_fn(|l| gate[i + l].to_f32());
        let u: [f32; L] = std::array::from_fn(|l| up[i + l].to_f32());
        let e: [f32; L] = std::array::from_fn(|l| exp(-g[l]));
        for l in 0..L {
            out[i + l] = X::from_f32(g[l] / (1.0 + e[l]) * u[l]);
        }
    }
    for i in full..n {
        let g = gate[i].to_f32();
        out[i] = X::from_f32(g / (1.0 + exp(-g)) * up[i].to_f32());
    }
}

/// `e^x`, branch-free: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by
/// its degree-6 Taylor polynomial, `2^n` built in the exponent bits. `x` is
/// clamped to where `e^x` is a normal f32 (silu's limits are unaffected:
/// `g / (1 + e^-g)` is `g` or `-0` there to f32 precision).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 · 2^23 rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let k = x * LOG2E + MAGIC;
    let n = k - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let ni = (k.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn values(t: &Tensor) -> Vec<f32> {
        let t = t.to_dtype(DType::F32).unwrap();
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Against an f64 reference, every dtype, rows with a lane tail, gates
    /// far out in both tails, and enough rows for several tasks.
    #[test]
    fn matches_reference_in_every_dtype() {
        for (m, i) in [(1, 1), (3, 13), (5, 64), (300, 301)] {
            // Gates of ±100 first: exp's clamp at both ends.
            let vals: Vec<f32> = [-100.0, 100.0]
                .into_iter()
                .chain((0..).map(|j: usize| ((j * 7919 % 1000) as f32 / 1000.0 - 0.5) * 24.0))
                .take(m * 2 * i)
                .collect();
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let t = Tensor::from_vec(vals.clone(), (m, 2 * i), &Device::Cpu).unwrap();
                let t = t.to_dtype(dtype).unwrap();
                let rounded = values(&t);
                let got = values(&silu_mul(&t).unwrap());
                assert_eq!(got.len(), m * i);
                let tol = match dtype {
                    DType::F32 => 1e-6,
                    DType::BF16 => 2f64.powi(-8),
                    _ => 2f64.powi(-10),
                };
                for r in 0..m {
                    for c in 0..i {
                        let (g, u) = (
                            rounded[r * 2 * i + c] as f64,
                            rounded[r * 2 * i + i + c] as f64,
                        );
                        let want = g / (1.0 + (-g).exp()) * u;
                        let err = (got[r * i + c] as f64 - want).abs();
                        assert!(
                            err <= tol * want.abs().max(1.0),
                            "{dtype:?} ({r}, {c}): got {} want {want}",
                            got[r * i + c]
                        );
                    }
                }
            }
        }
        let odd = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        let msg = silu_mul(&odd).unwrap_err().to_string();
        assert!(msg.contains("2 * intermediate"), "{msg}");
    }

    #[test]
    fn exp_is_within_a_few_ulps_over_the_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }
}
