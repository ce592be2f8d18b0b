//! The three arena dtypes behind one trait, so each kernel is written once
//! and monomorphised. Reads widen to f32 with branch-free bit tricks that
//! LLVM vectorises (half's own `f16::to_f32` checks CPU features per element).

use candle_core::{CpuStorage, DType};
use half::{bf16, f16};

/// A storage type of the KV arena (f32, bf16 or f16); maths is done in f32.
pub(crate) trait Element: Copy + Send + Sync + 'static {
    /// The candle dtype of this element type.
    const DTYPE: DType;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;

    /// The slice itself when it already is f32, so callers can skip a
    /// widening copy.
    #[inline(always)]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }

    /// Views `n` rows of `d` elements, `stride` apart in `src`, as f32 rows.
    /// f32 borrows the arena directly; narrow types widen into `scratch`.
    #[inline(always)]
    fn rows<'a>(
        src: &'a [Self],
        n: usize,
        stride: usize,
        d: usize,
        scratch: &'a mut Vec<f32>,
    ) -> Rows<'a> {
        scratch.resize(n * d, 0.0);
        for (r, dst) in scratch.chunks_exact_mut(d).enumerate() {
            let row = &src[r * stride..][..d];
            for (o, &x) in dst.iter_mut().zip(row) {
                *o = x.to_f32();
            }
        }
        Rows {
            data: scratch,
            stride: d,
            len: d,
        }
    }
}

/// Rows of f32, `stride` apart, `len` long each.
pub(crate) struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
    len: usize,
}

impl<'a> Rows<'a> {
    #[inline(always)]
    pub(crate) fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.stride..][..self.len]
    }
}

macro_rules! storage_access {
    ($variant:ident) => {
        const DTYPE: DType = DType::$variant;

        fn slice(s: &CpuStorage) -> Option<&[Self]> {
            match s {
                CpuStorage::$variant(v) => Some(v),
                _ => None,
            }
        }

        fn into_storage(v: Vec<Self>) -> CpuStorage {
            CpuStorage::$variant(v)
        }
    };
}

impl Element for f32 {
    storage_access!(F32);

    #[inline(always)]
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }

    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }

    #[inline(always)]
    fn rows<'a>(
        src: &'a [Self],
        n: usize,
        stride: usize,
        d: usize,
        _: &'a mut Vec<f32>,
    ) -> Rows<'a> {
        let end = if n == 0 { 0 } else { (n - 1) * stride + d };
        Rows {
            data: &src[..end],
            stride,
            len: d,
        }
    }
}

impl Element for bf16 {
    storage_access!(BF16);

    /// bf16 is the top half of an f32, so widening is a shift.
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }

    /// Rounds to nearest even by adding just under half an ulp (plus the
    /// kept lowest bit) before truncating; NaN stays a quiet NaN. Branch
    /// free, so loops over rows vectorise (`half`'s version branches).
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        let bits = x.to_bits();
        let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
        let quiet_nan = (bits >> 16) | 0x40;
        bf16::from_bits(if x.is_nan() { quiet_nan } else { rounded } as u16)
    }
}

impl Element for f16 {
    storage_access!(F16);

    /// Moves exponent and mantissa into f32 position and rescales by 2^112
    /// (the exponent-bias gap); the multiply also normalises subnormals
    /// exactly. Inf and NaN keep an all-ones exponent.
    #[inline(always)]
    fn to_f32(self) -> f32 {
        let h = self.to_bits() as u32;
        let sign = (h & 0x8000) << 16;
        let magnitude = (h & 0x7fff) << 13;
        let finite = (f32::from_bits(magnitude) * f32::from_bits(0x7780_0000)).to_bits();
        let bits = if h & 0x7c00 == 0x7c00 {
            magnitude | 0x7f80_0000
        } else {
            finite
        };
        f32::from_bits(bits | sign)
    }

    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn f16_widening_matches_half_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let x = f16::from_bits(bits);
            assert!(same(Element::to_f32(x), x.to_f32()), "bits {bits:#06x}");
        }
    }

    #[test]
    fn bf16_widening_matches_half_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let x = bf16::from_bits(bits);
            assert!(same(Element::to_f32(x), x.to_f32()), "bits {bits:#06x}");
        }
    }

    /// Every sign, exponent and the mantissa's rounding bits (lowest kept
    /// bit, half, sticky) in all combinations, plus a stride through the
    /// rest of the bit patterns.
    #[test]
    fn bf16_narrowing_matches_half() {
        let edges = (0..=0x1ffu32).flat_map(|se| {
            [
                0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1_0000, 0x1_8000, 0x1_7fff, 0x7f_ffff,
            ]
            .map(move |m| (se << 23) | m)
        });
        for bits in edges.chain((0..=u32::MAX).step_by(4099)) {
            let x = f32::from_bits(bits);
            let (got, want) = (<bf16 as Element>::from_f32(x), bf16::from_f32(x));
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "bits {bits:#010x}: got {:#06x}, want {:#06x}",
                got.to_bits(),
                want.to_bits()
            );
        }
    }

    #[test]
    fn rows_view_is_the_same_for_borrowed_and_widened() {
        let src: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let narrow: Vec<bf16> = src.iter().map(|&x| bf16::from_f32(x)).collect();
        let (mut s1, mut s2) = (Vec::new(), Vec::new());
        let a = f32::rows(&src, 3, 7, 4, &mut s1);
        let b = bf16::rows(&narrow, 3, 7, 4, &mut s2);
        for r in 0..3 {
            assert_eq!(a.row(r), b.row(r));
            assert_eq!(a.row(r)[0], (r * 7) as f32);
        }
    }
}
