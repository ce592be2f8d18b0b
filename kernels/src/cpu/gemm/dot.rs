//! Decode tiles: `R × C` blocks of dot products over full rows, both
//! operands read k-contiguous where they lie; each weight vector loaded (and
//! widened, for bf16/f16) feeds `R` FMAs.

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::plan::Plan;
use super::{portable, Isa, Lanes, Problem, Tile};

/// Accumulates tile `t` into `acc` (`rows × cols`, row-major).
pub(super) fn run<X: Lanes, W: Lanes>(
    p: &Problem<'_, X, W>,
    isa: Isa,
    plan: &Plan,
    t: &Tile,
    acc: &mut [f32],
) {
    let (rows, cols) = (t.rows.len(), t.cols.len());
    for ks in plan.k_blocks() {
        for j in (0..cols).step_by(plan.c) {
            // Past the tile's last column, repeat it; the result is dropped.
            let w_row = |c: usize| {
                let jj = t.cols.start + (j + c).min(cols - 1);
                &p.w[jj * p.k..][ks.clone()]
            };
            for i in (0..rows).step_by(plan.r) {
                let x_row = |r: usize| &p.x[(t.rows.start + i + r) * p.k..][ks.clone()];
                let shape = ((rows - i).min(plan.r), plan.c);
                let keep = (cols - j).min(plan.c);
                let out = &mut acc[i * cols + j..];
                block(isa, shape, plan.prefetch, x_row, w_row, out, cols, keep);
            }
        }
    }
}

/// Runs the `shape` = (rows, cols) kernel and adds its first `keep` columns
/// into `acc` (row stride `ld`).
#[allow(clippy::too_many_arguments)]
#[inline]
fn block<'a, X: Lanes, W: Lanes>(
    isa: Isa,
    shape: (usize, usize),
    prefetch: usize,
    x_row: impl Fn(usize) -> &'a [X],
    w_row: impl Fn(usize) -> &'a [W],
    acc: &mut [f32],
    ld: usize,
    keep: usize,
) {
    macro_rules! go {
        ($r:literal, $c:literal, $u:literal) => {{
            let xs: [&[X]; $r] = std::array::from_fn(&x_row);
            let ws: [&[W]; $c] = std::array::from_fn(&w_row);
            let res = dot_block::<X, W, $r, $c, $u>(isa, xs, ws, prefetch);
            for (r, res_row) in res.iter().enumerate() {
                for (a, v) in acc[r * ld..][..keep].iter_mut().zip(res_row) {
                    *a += v;
                }
            }
        }};
    }
    // Few rows get a k-unrolled loop (`U` accumulators per output) so the
    // FMA chains stay independent.
    match shape {
        (1, 1) => go!(1, 1, 4),
        (2, 1) => go!(2, 1, 2),
        (3, 1) => go!(3, 1, 2),
        (4, 1) => go!(4, 1, 1),
        (5, 1) => go!(5, 1, 1),
        (6, 1) => go!(6, 1, 1),
        (7, 1) => go!(7, 1, 1),
        (8, 1) => go!(8, 1, 1),
        (1, 3) => go!(1, 3, 1),
        (2, 3) => go!(2, 3, 1),
        (3, 3) => go!(3, 3, 1),
        (4, 3) => go!(4, 3, 1),
        _ => unreachable!("plan gives 1..=8 rows by 1, or 1..=4 rows by 3"),
    }
}

/// Dot products of `R` activation rows with `C` weight rows over their
/// common length.
#[inline]
fn dot_block<X: Lanes, W: Lanes, const R: usize, const C: usize, const U: usize>(
    isa: Isa,
    x: [&[X]; R],
    w: [&[W]; C],
    prefetch: usize,
) -> [[f32; C]; R] {
    let lens = x.iter().map(|s| s.len()).chain(w.iter().map(|s| s.len()));
    let len = lens.min().unwrap_or(0);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // AVX-512 machines run the AVX2 build here: a 16-lane version of
        // this kernel measured slower with f32 weights at 32 rows (58-82 vs
        // 66-139 GFLOP/s, alternated runs on a busy machine; not yet
        // explained, 64-byte loads splitting cache lines are the first
        // suspect) and no better at batch 1, which the weight stream bounds.
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
            let (xp, wp) = (x.map(<[X]>::as_ptr), w.map(<[W]>::as_ptr));
            // SAFETY: every row holds at least `len` elements, and these
            // builds are only returned by `detect` after checking AVX2, FMA
            // and F16C.
            unsafe { avx2::dot_block::<X, W, R, C, U>(xp, wp, len, prefetch) }
        }
        Isa::Portable => portable::dot_block::<X, W, R, C>(x, w, len),
        #[cfg(not(target_arch = "x86_64"))]
        _ => portable::dot_block::<X, W, R, C>(x, w, len),
    }
}
