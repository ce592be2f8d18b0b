//! Weights packed once for the packed kernels (bf16 for `vdpbf16ps`, f32
//! for AVX-512). Packing a tile's weight columns per call costs a pass
//! over the weights each step: 18 % of a batch-32 bf16 decode step and 4 %
//! of a prefill on Zen 4. Packed ahead, whole panels of 16 columns × all
//! of k lie in the layout the kernel reads, and any k block of a panel is
//! one contiguous run of it.

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::packed::compute;
use super::plan::{Compute, Mode, NR};
use super::Isa;
use candle_core::DType;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// A `[n, k]` weight packed into panels of 16 columns: panel `p` holds
/// columns `16 p..16 p + 16` (past `n`, column `n - 1` again), 64-byte
/// aligned, in the layout of the kernel that reads it.
pub(crate) struct PackedPanels {
    data: Data,
    skip: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
}

enum Data {
    /// bf16 for `vdpbf16ps`: `[k / 2 pairs][16 columns][2]` raw bits.
    Pairs(Vec<u16>),
    /// f32 for the AVX-512 broadcast kernel: `[k][16 columns]`.
    F32(Vec<f32>),
}

impl PackedPanels {
    /// Whether build `isa` multiplies `m` rows of `x` by a `w` weight `k`
    /// deep with a kernel that panels packed ahead serve: bf16 × bf16 on
    /// `vdpbf16ps`, f32 × f32 on AVX-512. Never when `TANDEM_CPU_PREPACK=0`
    /// (to spare the memory).
    pub(crate) fn serve(isa: Isa, x: DType, w: DType, m: usize, k: usize) -> bool {
        let ahead = match compute(isa, x, w, k) {
            Compute::Bf16Pairs => Compute::Bf16Pairs,
            Compute::F32 if x == DType::F32 && w == DType::F32 && isa.avx512() => {
                Compute::F32Panels
            }
            _ => return false,
        };
        Mode::of(m, w.size_in_bytes(), ahead) == Mode::Packed && enabled()
    }

    /// Packs bf16 `w` (`[n, k]` raw bits, `k` even) on the rayon pool.
    /// `None` where the CPU lacks AVX2 (no build that reads these runs
    /// there).
    pub(crate) fn pairs_of(w: &[u16], n: usize, k: usize) -> Option<Self> {
        assert!(k.is_multiple_of(2), "bf16 pairs need an even k");
        let (buf, skip) = fill(w, n, k, |rows, dst| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `fill` checked AVX2; each row holds `k` values and
            // `dst` room for one panel, `NR · k`.
            unsafe {
                avx2::pack_pairs(rows, k, dst)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (rows, dst);
        })?;
        Some(Self::new(Data::Pairs(buf), skip, n, k))
    }

    /// Packs f32 `w` (`[n, k]`) on the rayon pool; `None` without AVX2.
    pub(crate) fn f32_of(w: &[f32], n: usize, k: usize) -> Option<Self> {
        let (buf, skip) = fill(w, n, k, |rows, dst| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `pairs_of`.
            unsafe {
                avx2::pack_panel(rows, k, dst)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (rows, dst);
        })?;
        Some(Self::new(Data::F32(buf), skip, n, k))
    }

    fn new(data: Data, skip: usize, n: usize, k: usize) -> Self {
        PackedPanels { data, skip, n, k }
    }

    /// The bf16 pair panels, one after another, if these are.
    pub(crate) fn pairs(&self) -> Option<&[u16]> {
        match &self.data {
            Data::Pairs(v) => Some(&v[self.skip..]),
            Data::F32(_) => None,
        }
    }

    /// The f32 panels, one after another, if these are.
    pub(crate) fn f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(&v[self.skip..]),
            Data::Pairs(_) => None,
        }
    }

    /// Heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        match &self.data {
            Data::Pairs(v) => v.capacity() * size_of::<u16>(),
            Data::F32(v) => v.capacity() * size_of::<f32>(),
        }
    }
}

/// Packs `w` (`[n, k]`) panel by panel on the rayon pool: `pack(rows,
/// dst)` writes the panel of the 16 weight rows `rows` (the last repeated
/// past `n`) at `dst`, `16 · k` values. Returns the buffer and where its
/// 64-byte aligned panels start; `None` without AVX2 or when empty.
fn fill<T: Copy + Default + Send + Sync>(
    w: &[T],
    n: usize,
    k: usize,
    pack: impl Fn([*const T; NR], *mut T) + Sync,
) -> Option<(Vec<T>, usize)> {
    assert!(w.len() >= n * k, "PackedPanels: w is not [n, k]");
    if !Isa::available().contains(&Isa::Avx2) || n == 0 || k == 0 {
        return None;
    }
    let (panel, len, pad) = (k * NR, n.div_ceil(NR) * k * NR, 64 / size_of::<T>());
    // Not zeroed first: every value is written once, by the packing.
    let mut buf: Vec<T> = Vec::with_capacity(len + pad);
    let skip = buf.as_ptr().align_offset(64).min(pad);
    let spare = &mut buf.spare_capacity_mut()[..skip + len];
    spare[..skip].fill(MaybeUninit::new(T::default()));
    spare[skip..]
        .par_chunks_mut(panel)
        .enumerate()
        .for_each(|(pi, dst)| {
            let rows = std::array::from_fn(|c| w[(pi * NR + c).min(n - 1) * k..][..k].as_ptr());
            pack(rows, dst.as_mut_ptr().cast());
        });
    // SAFETY: the first `skip + len` values were all written above.
    unsafe { buf.set_len(skip + len) };
    Some((buf, skip))
}

/// Packing ahead is on unless `TANDEM_CPU_PREPACK` is `0`, `off` or
/// `false` (read once).
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let off = std::env::var("TANDEM_CPU_PREPACK").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "0" | "off" | "false"
            )
        });
        !off
    })
}
