//! bf16 weights packed once for the `vdpbf16ps` kernel. Packing a tile's
//! weight columns per call costs a pass over the weights each step: 18 %
//! of a batch-32 bf16 decode step and 4 % of a prefill on Zen 4. Packed
//! ahead, whole panels of 16 columns × all of k lie in the layout the
//! kernel reads (`[k / 2][16][2]`), and any k block of a panel is one
//! contiguous run of it.

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::packed::compute;
use super::plan::{Compute, Mode, NR};
use super::Isa;
use candle_core::DType;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// A `[n, k]` bf16 weight as pair-interleaved panels: panel `p` holds
/// columns `16 p..16 p + 16` (past `n`, column `n - 1` again), each
/// `[k / 2 pairs][16 columns][2]` raw bf16 bits, 64-byte aligned.
pub(crate) struct PairPanels {
    buf: Vec<u16>,
    skip: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
}

impl PairPanels {
    /// Whether build `isa` multiplies `m` rows of `x` by a `w` weight `k`
    /// deep with the packed `vdpbf16ps` kernel, which panels packed ahead
    /// serve; never when `TANDEM_CPU_PREPACK=0` (to spare the memory).
    pub(crate) fn serve(isa: Isa, x: DType, w: DType, m: usize, k: usize) -> bool {
        let pairs = compute(isa, x, w, k) == Compute::Bf16Pairs;
        pairs && Mode::of(m, w.size_in_bytes(), Compute::Bf16Pairs) == Mode::Packed && enabled()
    }

    /// Packs `w` (`[n, k]` bf16 bits, `k` even) on the rayon pool. `None`
    /// where the CPU lacks AVX2 (no build that reads these runs there).
    pub(crate) fn pack(w: &[u16], n: usize, k: usize) -> Option<Self> {
        assert!(
            k.is_multiple_of(2) && w.len() >= n * k,
            "PairPanels::pack: [n, k] with k even"
        );
        if !Isa::available().contains(&Isa::Avx2) || n == 0 || k == 0 {
            return None;
        }
        let (panel, len) = (k * NR, n.div_ceil(NR) * k * NR);
        // Not zeroed first: every value is written once, by the packing.
        let mut buf: Vec<u16> = Vec::with_capacity(len + LINE);
        let skip = buf.as_ptr().align_offset(LINE * 2).min(LINE);
        let spare = &mut buf.spare_capacity_mut()[..skip + len];
        spare[..skip].fill(MaybeUninit::new(0));
        spare[skip..]
            .par_chunks_mut(panel)
            .enumerate()
            .for_each(|(pi, dst)| {
                #[cfg(target_arch = "x86_64")]
                {
                    let rows: [*const u16; NR] =
                        std::array::from_fn(|c| w[(pi * NR + c).min(n - 1) * k..][..k].as_ptr());
                    // SAFETY: AVX2 was checked above; each row holds `k`
                    // values and `dst` room for one panel, `NR · k`.
                    unsafe { avx2::pack_pairs(rows, k, dst.as_mut_ptr().cast()) };
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (pi, dst);
            });
        // SAFETY: the first `skip + len` values were all written above.
        unsafe { buf.set_len(skip + len) };
        Some(PairPanels { buf, skip, n, k })
    }

    /// The panels, one after another.
    pub(crate) fn panels(&self) -> &[u16] {
        &self.buf[self.skip..]
    }

    /// Heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.buf.capacity() * size_of::<u16>()
    }
}

/// bf16 values per 64-byte cache line.
const LINE: usize = 32;

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
