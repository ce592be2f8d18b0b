//! CPU `y = x · wᵀ (+ bias)` for the `linear` op. `w` is read where it
//! lies (never copied whole); rayon tasks own disjoint output tiles, each
//! accumulated in an f32 tile and narrowed once. [`plan`] picks the regime
//! (streaming dot products for decode, packed broadcast kernel for
//! prefill); [`dot`] and [`packed`] run a tile; [`amx`] (bf16 × bf16
//! tiles), [`avx512bf16`] (bf16 × bf16 pairs), [`avx512`], [`avx2`] and
//! [`portable`] hold the builds of each register-block kernel.

pub(crate) mod amx;
mod avx2;
mod avx512;
mod avx512bf16;
mod dot;
mod packed;
mod plan;
mod portable;
mod prepack;

use crate::element::Element;
use half::{bf16, f16};
use plan::{Compute, Mode, Plan, Tile};
pub(crate) use prepack::PackedPanels;
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Which kernel build runs. `Portable` is always available, so tests can
/// cover the fallback on machines that have AVX2.
/// Declared best first, so `a < b` means `a` is the faster build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// AVX-512 plus AMX-BF16 tiles for bf16 × bf16 prefill products (and
    /// `vdpbf16ps` for those the tiles do not take); the AVX-512 build for
    /// everything else. Only built by [`Isa::detect`].
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Amx,
    /// AVX-512 plus AVX512-BF16 `vdpbf16ps` for bf16 × bf16 prefill
    /// products; the AVX-512 build for everything else. Only built by
    /// [`Isa::detect`].
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512Bf16,
    /// AVX-512F for the prefill kernel (and AVX2 + FMA + F16C for the
    /// rest); only built by [`Isa::detect`].
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
    /// AVX2 + FMA + F16C intrinsics; only built by [`Isa::detect`].
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    /// Plain Rust the compiler vectorises for the build target's baseline.
    Portable,
}

impl Isa {
    /// The build `linear` uses: the best this CPU runs, or a slower one
    /// named by `TANDEM_CPU_KERNELS` (`amx`, `avx512bf16`, `avx512`, `avx2`
    /// or `portable`; to compare builds in one binary, or to step around a
    /// kernel). Read once.
    pub fn detect() -> Self {
        static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let best = Isa::best();
            match std::env::var("TANDEM_CPU_KERNELS") {
                Err(_) => best,
                Ok(name) => match Isa::from_name(&name) {
                    // A faster build than the CPU runs is capped at its best.
                    Some(asked) => asked.max(best),
                    None => {
                        eprintln!(
                            "TANDEM_CPU_KERNELS={name:?} is not a kernel build; use amx, \
                             avx512bf16, avx512, avx2 or portable. Using {}.",
                            best.name()
                        );
                        best
                    }
                },
            }
        })
    }

    /// The best build this CPU runs (feature detection is a cached load).
    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            if is_x86_feature_detected!("avx512f") {
                // Every AMX CPU has AVX512-BF16, which the AMX build also
                // uses; without it the tiles are not used either.
                return match (avx512bf16::usable(), amx::usable()) {
                    (true, true) => Isa::Amx,
                    (true, false) => Isa::Avx512Bf16,
                    (false, _) => Isa::Avx512,
                };
            }
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// Every build, best first.
    const ALL: [Isa; 5] = [
        Isa::Amx,
        Isa::Avx512Bf16,
        Isa::Avx512,
        Isa::Avx2,
        Isa::Portable,
    ];

    /// Whether this build runs the AVX-512 f32 prefill kernel.
    fn avx512(self) -> bool {
        matches!(self, Isa::Amx | Isa::Avx512Bf16 | Isa::Avx512)
    }

    /// Whether this build multiplies bf16 pairs with `vdpbf16ps`.
    fn bf16_pairs(self) -> bool {
        matches!(self, Isa::Amx | Isa::Avx512Bf16)
    }

    fn from_name(name: &str) -> Option<Self> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == name.trim().to_ascii_lowercase())
    }

    /// Every build this CPU runs, best first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|&isa| isa >= Isa::best())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Amx => "amx",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// A storage type the kernels read 8 lanes at a time, widened to f32.
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

/// One validated product: `x` is `[m, k]`, `w` is `[n, k]`, `bias` is `[n]`;
/// `packed`, when given, is `w` packed ahead (`PackedPanels::pairs_of` or `f32_of` of it).
pub(crate) struct Problem<'a, X, W> {
    pub x: &'a [X],
    pub w: &'a [W],
    pub packed: Option<&'a PackedPanels>,
    pub bias: Option<Bias<'a>>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// Per-thread buffers, reused across calls so steady-state decode allocates
/// nothing but the output: the f32 output tile, and (prefill) the packed
/// weight panels and widened activations (and, for bf16 × bf16, the
/// pair-interleaved weight panels and AMX's zero-padded last activation
/// rows).
#[derive(Default)]
struct Scratch {
    acc: Vec<f32>,
    w_pack: Vec<f32>,
    x_pack: Vec<f32>,
    w_pairs: Vec<u16>,
    x_tail: Vec<u16>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Computes `[m, n]` in `x`'s dtype, accumulating in f32.
pub(crate) fn linear<X: Lanes, W: Lanes>(p: &Problem<'_, X, W>, isa: Isa) -> Vec<X> {
    assert!(
        p.x.len() >= p.m * p.k && p.w.len() >= p.n * p.k,
        "linear: operands too short"
    );
    if let Some(pp) = p.packed {
        assert!(
            pp.n == p.n && pp.k == p.k,
            "linear: packed panels of another shape"
        );
    }
    let len = p.m * p.n;
    // Not `vec![0; len]`: calloc hands out fresh pages mapped to the zero
    // page, and the kernel's first read-modify-write of each then takes a
    // copy-on-write fault whose TLB shootdown interrupts every other core
    // (22 % of a 2,048-token prefill profile in a VM). Each task instead
    // writes its own tile before anything reads it.
    let mut out: Vec<X> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let compute = match packed::compute(isa, X::DTYPE, W::DTYPE, p.k) {
        Compute::F32 if p.packed.and_then(PackedPanels::f32).is_some() => Compute::F32Panels,
        compute => compute,
    };
    let plan = Plan::new(
        p.m,
        p.k,
        p.n,
        size_of::<W>(),
        rayon::current_num_threads(),
        compute,
    );
    let dst = OutPtr(out.as_mut_ptr());
    // f32 outputs take the prefill sums directly; others go through the tile.
    let direct = plan.mode == Mode::Packed && X::as_f32(&[]).is_some();
    let run = |t: usize| {
        let tile = plan.tile(t);
        let (rows, cols) = (tile.rows.len(), tile.cols.len());
        SCRATCH.with_borrow_mut(|s| {
            if !direct {
                s.acc.clear();
                s.acc.resize(rows * cols, 0.0);
            }
            if plan.mode != Mode::Packed {
                dot::run(p, isa, &plan, &tile, &mut s.acc);
                return write_out(p, &tile, &mut s.acc, &dst);
            }
            if direct {
                zero_tile(p, &tile, &dst);
            }
            let dest = match direct {
                // `X` is f32 here, so the output is an f32 buffer.
                true => packed::Dest {
                    ptr: dst
                        .0
                        .cast::<f32>()
                        .wrapping_add(tile.rows.start * p.n + tile.cols.start),
                    ld: p.n,
                },
                false => packed::Dest {
                    ptr: s.acc.as_mut_ptr(),
                    ld: cols,
                },
            };
            // SAFETY: `dest` is this task's tile of the (zeroed) output, which
            // no other task touches, or its own scratch tile of that shape.
            unsafe { packed::run(p, isa, &plan, &tile, s, dest) };
            match direct {
                true => add_bias(p, &tile, &dst),
                false => write_out(p, &tile, &mut s.acc, &dst),
            }
        });
    };
    // One tile runs on the caller: waking a worker costs more than it saves.
    match plan.num_tiles() {
        1 => run(0),
        tiles => (0..tiles).into_par_iter().for_each(run),
    }
    // SAFETY: the tiles cover the `[m, n]` output (see `Plan`) and every
    // task wrote all of its tile, through `zero_tile` or `write_out`.
    unsafe { out.set_len(len) };
    out
}

/// Zeroes a tile of the (uninitialised) output before the kernel adds into
/// it; the writes fault its pages in without a read of the zero page.
fn zero_tile<X: Lanes, W>(p: &Problem<'_, X, W>, t: &Tile, dst: &OutPtr<X>) {
    for i in t.rows.clone() {
        // SAFETY: this row segment lies inside the `[m, n]` allocation and
        // belongs to this task's tile; an all-zero `X` is `0.0`.
        unsafe { std::ptr::write_bytes(dst.0.add(i * p.n + t.cols.start), 0, t.cols.len()) };
    }
}

/// The output buffer shared by the tasks, each writing its own tile.
struct OutPtr<T>(*mut T);

// SAFETY: tasks write disjoint tiles (see `Plan`) and `linear` keeps the
// buffer alive and otherwise untouched until every task has finished.
unsafe impl<T: Send> Send for OutPtr<T> {}
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// Adds the bias to a tile the kernel wrote into the output directly.
fn add_bias<X: Lanes, W>(p: &Problem<'_, X, W>, t: &Tile, dst: &OutPtr<X>) {
    let Some(b) = p.bias else { return };
    for i in t.rows.clone() {
        let start = i * p.n + t.cols.start;
        // SAFETY: as in `write_out`, this row segment belongs to this task.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.0.add(start), t.cols.len()) };
        for (j, o) in t.cols.clone().zip(out) {
            *o = X::from_f32(o.to_f32() + b.get(j));
        }
    }
}

/// Adds the bias to the f32 tile and narrows it into the output, a row at
/// a time in two vectorisable passes.
fn write_out<X: Lanes, W>(p: &Problem<'_, X, W>, t: &Tile, acc: &mut [f32], dst: &OutPtr<X>) {
    let cols = t.cols.len();
    for (i, acc_row) in acc.chunks_exact_mut(cols).enumerate() {
        if let Some(b) = p.bias {
            for (j, a) in t.cols.clone().zip(acc_row.iter_mut()) {
                *a += b.get(j);
            }
        }
        let start = (t.rows.start + i) * p.n + t.cols.start;
        // SAFETY: this row segment lies inside the `[m, n]` output and
        // inside this task's tile, which no other task touches; it is
        // written through `MaybeUninit`, as it may not be initialised yet.
        let out = unsafe {
            std::slice::from_raw_parts_mut(dst.0.add(start).cast::<MaybeUninit<X>>(), cols)
        };
        for (o, &a) in out.iter_mut().zip(acc_row.iter()) {
            o.write(X::from_f32(a));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Isa;

    #[test]
    fn builds_are_named_and_listed_best_first() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("sse"), None);
        let available = Isa::available();
        assert_eq!(available.first(), Some(&Isa::best()));
        assert_eq!(available.last(), Some(&Isa::Portable));
        assert!(available.windows(2).all(|w| w[0] < w[1]));
    }
}
