//! The fallback microkernel in plain Rust: the same `R × C` blocking with
//! 8 independent lanes per output, which LLVM vectorises for the target's
//! baseline without fast-math.

use super::plan::{MR, NR};
use crate::element::Element;

const LANES: usize = 8;

/// `R × C` dot products over the first `len` elements of each row.
#[inline(always)]
pub(super) fn dot_block<X: Element, W: Element, const R: usize, const C: usize>(
    x: [&[X]; R],
    w: [&[W]; C],
    len: usize,
) -> [[f32; C]; R] {
    let mut acc = [[[0.0f32; LANES]; C]; R];
    let whole = len / LANES * LANES;
    for i in (0..whole).step_by(LANES) {
        let mut wv = [[0.0f32; LANES]; C];
        for (v, row) in wv.iter_mut().zip(&w) {
            for (o, e) in v.iter_mut().zip(&row[i..i + LANES]) {
                *o = e.to_f32();
            }
        }
        for (acc_r, row) in acc.iter_mut().zip(&x) {
            let mut xv = [0.0f32; LANES];
            for (o, e) in xv.iter_mut().zip(&row[i..i + LANES]) {
                *o = e.to_f32();
            }
            for (a, wc) in acc_r.iter_mut().zip(&wv) {
                for l in 0..LANES {
                    a[l] += xv[l] * wc[l];
                }
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            let [a, b, cc, d, e, f, g, h] = acc[r][c];
            let mut s = ((a + e) + (b + f)) + ((cc + g) + (d + h));
            for j in whole..len {
                s += x[r][j].to_f32() * w[c][j].to_f32();
            }
            out[r][c] = s;
        }
    }
    out
}

/// The packed prefill kernel: `acc[r * ld + 0..NR] += Σ_k x[r][k] ·
/// panel[k * NR + 0..NR]` for `r < MR`, over the first `kc` steps.
///
/// # Safety
/// `acc` points at `MR` rows of `NR` writable f32, `ld` apart, that nothing
/// else accesses during the call.
#[inline(always)]
pub(super) unsafe fn tile(x: [&[f32]; MR], panel: &[f32], kc: usize, acc: *mut f32, ld: usize) {
    let mut c = [[0.0f32; NR]; MR];
    for (kk, w) in panel.chunks_exact(NR).take(kc).enumerate() {
        for (cr, xr) in c.iter_mut().zip(&x) {
            let b = xr[kk];
            for l in 0..NR {
                cr[l] += b * w[l];
            }
        }
    }
    for (r, cr) in c.iter().enumerate() {
        // SAFETY: row `r < MR` of `NR` values, as the caller guarantees.
        let row = unsafe { std::slice::from_raw_parts_mut(acc.add(r * ld), NR) };
        row.iter_mut().zip(cr).for_each(|(a, v)| *a += v);
    }
}
