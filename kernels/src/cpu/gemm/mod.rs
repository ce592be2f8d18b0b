//! CPU `y = x · wᵀ (+ bias)` for the `linear` op. Both operands are read
//! k-contiguous as they lie (no packing, no copy of `w`): an `R × C` block of
//! outputs is `R` activation rows dotted with `C` weight rows, so each weight
//! vector loaded (and widened, for bf16/f16) feeds `R` FMAs. Rayon tasks
//! own disjoint output tiles; see [`plan`] for how the tiles and the k blocks
//! are sized.

mod avx2;
mod plan;
mod portable;

use crate::element::Element;
use half::{bf16, f16};
use plan::{Plan, Tile};
use rayon::prelude::*;
use std::cell::RefCell;

/// Which microkernel build runs. `Portable` is always available, so tests
/// can cover the fallback on machines that have AVX2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX2 + FMA + F16C intrinsics; only built by [`Isa::detect`].
    Avx2,
    /// Plain Rust the compiler vectorises for the build target's baseline.
    Portable,
}

impl Isa {
    /// The best build this CPU runs (feature detection is a cached load).
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
        Isa::Portable
    }
}

/// A storage type the kernel reads 8 lanes at a time, widened to f32.
pub(crate) trait Lanes: Element {
    /// Loads `p[0..8]` as f32 lanes.
    ///
    /// # Safety
    /// `p..p + 8` must be readable and the CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

/// The bias row, in whichever dtype the checkpoint stores it.
#[derive(Clone, Copy)]
pub(crate) enum Bias<'a> {
    F32(&'a [f32]),
    BF16(&'a [bf16]),
    F16(&'a [f16]),
}

impl Bias<'_> {
    #[inline]
    fn get(&self, j: usize) -> f32 {
        match self {
            Bias::F32(b) => b[j],
            Bias::BF16(b) => b[j].to_f32(),
            Bias::F16(b) => Element::to_f32(b[j]),
        }
    }
}

/// One validated product: `x` is `[m, k]`, `w` is `[n, k]`, `bias` is `[n]`.
pub(crate) struct Problem<'a, X, W> {
    pub x: &'a [X],
    pub w: &'a [W],
    pub bias: Option<Bias<'a>>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// Computes `[m, n]` in `x`'s dtype, accumulating in f32.
pub(crate) fn linear<X: Lanes, W: Lanes>(p: &Problem<'_, X, W>, isa: Isa) -> Vec<X> {
    debug_assert!(p.x.len() >= p.m * p.k && p.w.len() >= p.n * p.k);
    let mut out = vec![X::from_f32(0.0); p.m * p.n];
    if out.is_empty() {
        return out;
    }
    let plan = Plan::new(p.m, p.k, p.n, rayon::current_num_threads());
    let dst = OutPtr(out.as_mut_ptr());
    (0..plan.num_tiles()).into_par_iter().for_each(|t| {
        let tile = plan.tile(t);
        ACC.with_borrow_mut(|acc| run_tile(p, isa, &plan, &tile, acc, &dst));
    });
    out
}

thread_local! {
    /// Per-thread f32 accumulator for one output tile, reused across calls
    /// so steady-state decode allocates nothing but the output.
    static ACC: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The output buffer shared by the tasks, each writing its own tile.
struct OutPtr<T>(*mut T);

// SAFETY: tasks write disjoint tiles (see `Plan`) and `linear` keeps the
// buffer alive and otherwise untouched until every task has finished.
unsafe impl<T: Send> Send for OutPtr<T> {}
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// Accumulates one tile over all k blocks in `acc`, then adds the bias and
/// narrows into the output.
fn run_tile<X: Lanes, W: Lanes>(
    p: &Problem<'_, X, W>,
    isa: Isa,
    plan: &Plan,
    t: &Tile,
    acc: &mut Vec<f32>,
    dst: &OutPtr<X>,
) {
    let (rows, cols) = (t.rows.len(), t.cols.len());
    acc.clear();
    acc.resize(rows * cols, 0.0);
    for ks in plan.k_blocks() {
        for j in (0..cols).step_by(plan.c) {
            let w_row = |c: usize| {
                // Past the tile's last column, repeat it; the result is dropped.
                let jj = t.cols.start + (j + c).min(cols - 1);
                &p.w[jj * p.k..][ks.clone()]
            };
            for i in (0..rows).step_by(plan::R) {
                let x_row = |r: usize| &p.x[(t.rows.start + i + r) * p.k..][ks.clone()];
                let r = (rows - i).min(plan::R);
                let c = (cols - j).min(plan.c);
                let tile_acc = &mut acc[i * cols + j..];
                block(isa, plan.c, r, x_row, w_row, cols, c, tile_acc);
            }
        }
    }
    for (i, acc_row) in acc.chunks_exact(cols).enumerate() {
        let row = (t.rows.start + i) * p.n + t.cols.start;
        // SAFETY: `row..row + cols` lies inside the `[m, n]` output and inside
        // this task's tile, which no other task touches.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.0.add(row), cols) };
        for (jj, (o, &a)) in out.iter_mut().zip(acc_row).enumerate() {
            let b = p.bias.map_or(0.0, |b| b.get(t.cols.start + jj));
            *o = X::from_f32(a + b);
        }
    }
}

/// Runs the `r × cw` kernel (`cw` = the plan's column block, 3 or 4) and adds
/// its first `c` columns into `acc` (row stride `ld`).
#[allow(clippy::too_many_arguments)]
#[inline]
fn block<'a, X: Lanes, W: Lanes>(
    isa: Isa,
    cw: usize,
    r: usize,
    x_row: impl Fn(usize) -> &'a [X],
    w_row: impl Fn(usize) -> &'a [W],
    ld: usize,
    c: usize,
    acc: &mut [f32],
) {
    macro_rules! go {
        ($r:literal, $c:literal) => {{
            let xs: [&[X]; $r] = std::array::from_fn(|i| x_row(i));
            let ws: [&[W]; $c] = std::array::from_fn(|i| w_row(i));
            let res = dot_block::<X, W, $r, $c>(isa, xs, ws);
            for (rr, res_row) in res.iter().enumerate() {
                for (a, v) in acc[rr * ld..][..c].iter_mut().zip(res_row) {
                    *a += v;
                }
            }
        }};
    }
    match (r, cw) {
        (1, 4) => go!(1, 4),
        (2, 4) => go!(2, 4),
        (1, 3) => go!(1, 3),
        (2, 3) => go!(2, 3),
        (3, 3) => go!(3, 3),
        (4, 3) => go!(4, 3),
        _ => unreachable!("plan gives r in 1..=4 with 3 columns, r in 1..=2 with 4"),
    }
}

/// Dot products of `R` activation rows with `C` weight rows over their
/// common length.
#[inline]
fn dot_block<X: Lanes, W: Lanes, const R: usize, const C: usize>(
    isa: Isa,
    x: [&[X]; R],
    w: [&[W]; C],
) -> [[f32; C]; R] {
    let len = x.iter().map(|s| s.len()).chain(w.iter().map(|s| s.len()));
    let len = len.min().unwrap_or(0);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            let xp = x.map(|s| s.as_ptr());
            let wp = w.map(|s| s.as_ptr());
            // SAFETY: every row holds at least `len` elements, and `Isa::Avx2`
            // is only returned by `detect` after checking AVX2, FMA and F16C.
            unsafe { avx2::dot_block::<X, W, R, C>(xp, wp, len) }
        }
        _ => portable::dot_block::<X, W, R, C>(x, w, len),
    }
}
