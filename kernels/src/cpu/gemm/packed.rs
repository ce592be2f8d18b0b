//! Prefill tiles: per k block, the task widens its weight rows into f32
//! panels of `NR` columns laid out k-major (`[kc][NR]`), then runs an
//! `MR × NR` broadcast kernel: each step loads `NR` weights as two vectors
//! and broadcasts one activation per row, 12 FMAs on 12 accumulators. Both
//! the panel and the activation rows are hot in L1; the widening costs one
//! pass over the weight block per `MB` activation rows.

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::plan::{Plan, MR, NR};
use super::{portable, Isa, Lanes, Problem, Tile};
use crate::element::Element;
use std::ops::Range;

/// Where a tile's sums go: `rows × cols` f32 at row stride `ld`, either
/// the task's scratch tile or, for f32 outputs, the output itself (saving a
/// zeroing pass and a copy).
pub(super) struct Dest {
    pub(super) ptr: *mut f32,
    pub(super) ld: usize,
}

/// Accumulates tile `t` into `dest`.
///
/// # Safety
/// `dest` covers `t.rows.len()` rows of `t.cols.len()` writable f32 at
/// stride `dest.ld`, and no other thread touches them during the call.
pub(super) unsafe fn run<X: Lanes, W: Lanes>(
    p: &Problem<'_, X, W>,
    isa: Isa,
    plan: &Plan,
    t: &Tile,
    (w_pack, x_pack): (&mut Vec<f32>, &mut Vec<f32>),
    dest: Dest,
) {
    let (rows, cols) = (t.rows.len(), t.cols.len());
    let panels = cols.div_ceil(NR);
    let w_pack = aligned(w_pack, panels * plan.kc() * NR);
    for ks in plan.k_blocks() {
        let kc = ks.len();
        let w_block = &mut w_pack[..panels * kc * NR];
        pack_w(isa, p.w, p.k, t.cols.clone(), ks.clone(), w_block);
        // f32 activations are read in place; others are widened once.
        let (xs, stride) = match X::as_f32(p.x) {
            Some(x) => (&x[t.rows.start * p.k + ks.start..], p.k),
            None => {
                pack_x(p.x, p.k, t.rows.clone(), ks.clone(), x_pack);
                (&x_pack[..], kc)
            }
        };
        for (pi, panel) in w_block.chunks_exact(kc * NR).enumerate() {
            let (c0, keep) = (pi * NR, (cols - pi * NR).min(NR));
            for i in (0..rows).step_by(MR) {
                let live = (rows - i).min(MR);
                // Rows past the tile repeat its last row; results dropped.
                let x: [&[f32]; MR] =
                    std::array::from_fn(|r| &xs[(i + r.min(live - 1)) * stride..][..kc]);
                let at = dest.ptr.wrapping_add(i * dest.ld + c0);
                if live == MR && keep == NR {
                    // SAFETY: rows `i..i + MR` and columns `c0..c0 + NR` lie
                    // in the tile, which the caller lends us exclusively.
                    unsafe { kernel(isa, x, panel, at, dest.ld) };
                } else {
                    let mut tmp = [0.0f32; MR * NR];
                    // SAFETY: `tmp` holds `MR` rows of `NR`.
                    unsafe { kernel(isa, x, panel, tmp.as_mut_ptr(), NR) };
                    for (r, sums) in tmp.chunks_exact(NR).take(live).enumerate() {
                        // SAFETY: row `i + r < rows`, columns `c0..c0 + keep`
                        // are in the tile (see above).
                        let row =
                            unsafe { std::slice::from_raw_parts_mut(at.add(r * dest.ld), keep) };
                        row.iter_mut().zip(sums).for_each(|(a, v)| *a += v);
                    }
                }
            }
        }
    }
}

/// `acc[r * ld + 0..NR] += Σ_k x[r][k] · panel[k][0..NR]` for `r < MR`.
///
/// # Safety
/// `acc` points at `MR` rows of `NR` writable f32, `ld` apart, that nothing
/// else accesses during the call.
#[inline]
unsafe fn kernel(isa: Isa, x: [&[f32]; MR], panel: &[f32], acc: *mut f32, ld: usize) {
    let kc = x.iter().map(|r| r.len()).min().unwrap_or(0);
    let kc = kc.min(panel.len() / NR);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            let xp = x.map(<[f32]>::as_ptr);
            // SAFETY: each `x[r]` holds `kc` elements, `panel` `kc * NR`, the
            // caller vouches for `acc`; `Isa::Avx2` is only built after
            // detecting AVX2 and FMA.
            unsafe { avx2::tile(xp, panel.as_ptr(), kc, acc, ld) }
        }
        // SAFETY: the caller vouches for `acc`.
        _ => unsafe { portable::tile(x, panel, kc, acc, ld) },
    }
}

/// Widens weight rows `cols`, k range `ks`, into `[panel][kc][NR]`. Past
/// `cols.end` the last row repeats: those columns' results are dropped.
fn pack_w<W: Lanes>(
    isa: Isa,
    w: &[W],
    k: usize,
    cols: Range<usize>,
    ks: Range<usize>,
    out: &mut [f32],
) {
    let kc = ks.len();
    for (pi, panel) in out.chunks_exact_mut(kc * NR).enumerate() {
        let rows: [&[W]; NR] = std::array::from_fn(|jj| {
            let j = (cols.start + pi * NR + jj).min(cols.end - 1);
            &w[j * k + ks.start..][..kc]
        });
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                // SAFETY: every row has `kc` elements and `panel` `kc * NR`;
                // `Isa::Avx2` is only built after detecting AVX2, FMA, F16C.
                unsafe { avx2::pack_panel(rows.map(<[W]>::as_ptr), kc, panel.as_mut_ptr()) }
            }
            _ => {
                for (kk, dst) in panel.chunks_exact_mut(NR).enumerate() {
                    for (d, row) in dst.iter_mut().zip(&rows) {
                        *d = row[kk].to_f32();
                    }
                }
            }
        }
    }
}

/// Widens activation rows `rows`, k range `ks`, into `[row][kc]`.
fn pack_x<X: Element>(x: &[X], k: usize, rows: Range<usize>, ks: Range<usize>, out: &mut Vec<f32>) {
    out.clear();
    for i in rows {
        out.extend(x[i * k + ks.start..][..ks.len()].iter().map(|v| v.to_f32()));
    }
}

/// A `len`-element view of `buf` starting on a 64-byte boundary, so packed
/// panel loads never straddle cache lines.
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len + 16, 0.0);
    let skip = buf.as_ptr().align_offset(64).min(16);
    &mut buf[skip..skip + len]
}
