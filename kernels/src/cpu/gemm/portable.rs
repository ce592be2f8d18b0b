//! The fallback microkernel in plain Rust: the same `R × C` blocking with
//! 8 independent lanes per output, which LLVM vectorises for the target's
//! baseline without fast-math.

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
