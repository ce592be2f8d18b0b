//! Prefill tiles: per k block, the task widens its weight rows into f32
//! panels of `NR` columns laid out k-major (`[kc][NR]`), then runs a
//! broadcast kernel over register blocks: with AVX2 (and portable) `MR ×
//! NR` — each step loads `NR` weights as two vectors and broadcasts one
//! activation per row, 12 FMAs on 12 accumulators, panel by panel down the
//! tile; with AVX-512 `MR512` rows × two panels, the rows first interleaved
//! into one micro-panel (see `avx512`). The widening costs one pass over
//! the weight block per `MB` activation rows. bf16 × bf16 products skip the
//! widening where the CPU multiplies bf16 pairs: the weights are packed
//! pair-interleaved for AMX tiles or for `vdpbf16ps` (see `avx512bf16`),
//! and the activations are read in place. Weights packed ahead (see
//! `prepack`: bf16 pairs, and f32 panels for the AVX-512 kernel) are read
//! where they lie instead of being packed per task.

use super::amx;
#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::avx512::{MR512, PANELS512};
use super::plan::{Compute, Plan, MR, NR};
#[cfg(target_arch = "x86_64")]
use super::{avx512, avx512bf16};
use super::{portable, Isa, Lanes, PackedPanels, Problem, Scratch, Tile};
use crate::element::Element;
use candle_core::DType;
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
    scratch: &mut Scratch,
    dest: Dest,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(bf16) = bf16_operands(p, 2) {
        // SAFETY (both): the caller lends us `dest`; the plan chose these
        // only for builds `detect` returns on CPUs with AVX512-BF16 (and
        // AMX).
        match plan.compute {
            Compute::Bf16Tiles => return unsafe { run_amx(&bf16, t, scratch, &dest) },
            Compute::Bf16Pairs => return unsafe { run_pairs(&bf16, plan, t, scratch, &dest) },
            Compute::F32 | Compute::F32Panels => {}
        }
    }
    let ahead = match plan.compute {
        Compute::F32Panels => p.packed.and_then(PackedPanels::f32),
        _ => None,
    };
    let w_pack = pack_scratch(&mut scratch.w_pack, ahead.is_some(), plan, t);
    let x_pack = &mut scratch.x_pack;
    for ks in plan.k_blocks() {
        let block = KBlock::ahead_or(ahead, w_pack, p.k, t, ks.clone(), |w| {
            pack_w(isa, p.w, p.k, t.cols.clone(), ks.clone(), w)
        });
        // SAFETY: the caller lends us `dest` for the tile.
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Amx | Isa::Avx512Bf16 | Isa::Avx512 => unsafe {
                block_avx512(p, t, ks, &block, x_pack, &dest)
            },
            Isa::Avx2 | Isa::Portable => unsafe {
                block_by_panel(p, isa, t, ks, &block, x_pack, &dest)
            },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unsafe { block_by_panel(p, isa, t, ks, &block, x_pack, &dest) },
        }
    }
}

/// A product's operands as raw bf16 bits, when both are bf16, and the
/// weights' panels when they were packed ahead (see [`PackedPanels`]).
struct Bf16Operands<'a> {
    x: &'a [u16],
    w: &'a [u16],
    k: usize,
    packed: Option<&'a [u16]>,
}

/// How build `isa` multiplies activations of dtype `x` by weights of dtype
/// `w`, `k` deep, when packed: AMX tiles (bf16 operands, `k` whole tile
/// steps), `vdpbf16ps` pairs (bf16, `k` even), or widened to f32. The plan
/// keeps the choice, which `run` follows.
pub(super) fn compute(isa: Isa, x: DType, w: DType, k: usize) -> Compute {
    let bf16 = x == DType::BF16 && w == DType::BF16 && k.is_multiple_of(2);
    match isa {
        Isa::Amx if bf16 && k.is_multiple_of(amx::KSTEP) => Compute::Bf16Tiles,
        isa if bf16 && isa.bf16_pairs() => Compute::Bf16Pairs,
        _ => Compute::F32,
    }
}

/// `p`'s operands as bf16 bits, when both are bf16 and `k` is a multiple
/// of `k_unit`.
fn bf16_operands<'a, X: Lanes, W: Lanes>(
    p: &Problem<'a, X, W>,
    k_unit: usize,
) -> Option<Bf16Operands<'a>> {
    if X::DTYPE != DType::BF16 || W::DTYPE != DType::BF16 || !p.k.is_multiple_of(k_unit) {
        return None;
    }
    // SAFETY: `X` and `W` are bf16 (their dtype says so), which is a plain
    // 16-bit value: the slices reinterpret as `u16` of the same length.
    let bits = |ptr: *const u16, len| unsafe { std::slice::from_raw_parts(ptr, len) };
    Some(Bf16Operands {
        x: bits(p.x.as_ptr().cast(), p.x.len()),
        w: bits(p.w.as_ptr().cast(), p.w.len()),
        k: p.k,
        packed: p.packed.and_then(PackedPanels::pairs),
    })
}

/// AMX k blocks: the two weight panels of a block, `AMX_KC × 16` bf16 each
/// (28 KiB together), stay in L1 while the activation rows stream past.
const AMX_KC: usize = 14 * amx::KSTEP;

/// Tile `t` with AMX: per k block, pack the tile's weight columns into
/// tiles once, then run each 32 × 32 register block over it; the last
/// rows (fewer than 32) read a zero-padded copy, and blocks past the tile's
/// last row or column land in a scratch block, of which the part inside the
/// tile is added.
///
/// # Safety
/// As [`run`]; `Isa::Amx` was detected.
#[cfg(target_arch = "x86_64")]
unsafe fn run_amx(op: &Bf16Operands<'_>, t: &Tile, s: &mut Scratch, dest: &Dest) {
    use amx::{BLOCK, KSTEP, TILE};
    let (rows, cols, k) = (t.rows.len(), t.cols.len(), op.k);
    let pairs = cols.div_ceil(BLOCK);
    let kc_max = AMX_KC.min(k);
    s.w_pairs.resize(pairs * 2 * TILE * kc_max, 0);
    let full_rows = rows - rows % BLOCK;
    // SAFETY: AMX was detected (the caller's contract).
    unsafe { amx::configure() };
    for k0 in (0..k).step_by(AMX_KC) {
        let ks = k0..(k0 + AMX_KC).min(k);
        let kc = ks.len();
        let panels = &mut s.w_pairs[..pairs * 2 * TILE * kc];
        // SAFETY: AMX CPUs have AVX2.
        unsafe { pack_pairs(op.w, k, t.cols.clone(), ks.clone(), panels) };
        if full_rows < rows {
            s.x_tail.clear();
            s.x_tail.resize(BLOCK * kc, 0);
            for (r, dst) in s
                .x_tail
                .chunks_exact_mut(kc)
                .take(rows - full_rows)
                .enumerate()
            {
                dst.copy_from_slice(&op.x[(t.rows.start + full_rows + r) * k + k0..][..kc]);
            }
        }
        for pair in 0..pairs {
            let b = [2 * pair, 2 * pair + 1].map(|pi| s.w_pairs[pi * TILE * kc..].as_ptr());
            let (c0, keep) = (pair * BLOCK, (cols - pair * BLOCK).min(BLOCK));
            for i in (0..rows).step_by(BLOCK) {
                let live = (rows - i).min(BLOCK);
                let (x, x_stride) = match live == BLOCK {
                    true => (op.x[(t.rows.start + i) * k + k0..].as_ptr(), 2 * k),
                    false => (s.x_tail.as_ptr(), 2 * kc),
                };
                let at = dest.ptr.wrapping_add(i * dest.ld + c0);
                let mut blk = amx::Block {
                    x,
                    x_stride,
                    b,
                    ksteps: kc / KSTEP,
                    c: at,
                    c_stride: 4 * dest.ld,
                };
                // SAFETY: full blocks lie inside the tile, which the caller
                // lends us; the others go through `add_block`'s scratch.
                unsafe {
                    add_block(
                        at,
                        dest.ld,
                        live,
                        keep,
                        live == BLOCK && keep == BLOCK,
                        BLOCK,
                        |c, ld| {
                            blk.c = c;
                            blk.c_stride = 4 * ld;
                            amx::run_block(&blk)
                        },
                    )
                };
            }
        }
    }
}

/// One k block of a tile: its packed weight panels (`kc · NR` values each:
/// widened f32, or bf16 pairs), `stride` apart from `w`, each starting
/// `offset` values in: packed per task, the panels hold just the k block
/// (`stride = kc · NR`); packed ahead, they hold all of k and the block
/// starts at its first k.
struct KBlock<'a, T> {
    w: &'a [T],
    stride: usize,
    offset: usize,
    kc: usize,
    cols: usize,
}

impl<'a, T> KBlock<'a, T> {
    /// Tile `t`'s k block `ks`: read from the panels packed ahead (`ahead`,
    /// each `k` deep) when there are, else packed by `pack` into the start
    /// of `scratch` (room for the tile's panels of the largest k block).
    /// Packed tiles start on a panel (their columns come in whole panels),
    /// so the tile's panels follow one another in `ahead`.
    fn ahead_or(
        ahead: Option<&'a [T]>,
        scratch: &'a mut [T],
        k: usize,
        t: &Tile,
        ks: Range<usize>,
        pack: impl FnOnce(&mut [T]),
    ) -> Self {
        let (kc, cols) = (ks.len(), t.cols.len());
        let (w, stride, offset) = match ahead {
            Some(all) => (&all[t.cols.start / NR * k * NR..], k * NR, ks.start * NR),
            None => {
                let w = &mut scratch[..cols.div_ceil(NR) * kc * NR];
                pack(w);
                (&*w, kc * NR, 0)
            }
        };
        KBlock {
            w,
            stride,
            offset,
            kc,
            cols,
        }
    }

    /// Panel `pi`, clamped to the last one (columns past the tile repeat
    /// its last panel; those results are dropped).
    fn panel(&self, pi: usize) -> &[T] {
        let last = self.cols.div_ceil(NR) - 1;
        &self.w[pi.min(last) * self.stride + self.offset..][..self.kc * NR]
    }
}

/// AVX2 and portable: panel by panel, the 6-row blocks run down the tile
/// against one panel that stays in L1, activation rows read in place (f32)
/// or widened once.
///
/// # Safety
/// As [`run`].
unsafe fn block_by_panel<X: Lanes, W: Lanes>(
    p: &Problem<'_, X, W>,
    isa: Isa,
    t: &Tile,
    ks: Range<usize>,
    b: &KBlock<'_, f32>,
    x_pack: &mut Vec<f32>,
    dest: &Dest,
) {
    let (rows, kc) = (t.rows.len(), b.kc);
    let (xs, stride) = activations(p, t, ks, kc, x_pack);
    for pi in 0..b.cols.div_ceil(NR) {
        let panel = b.panel(pi);
        let (c0, keep) = (pi * NR, (b.cols - pi * NR).min(NR));
        for i in (0..rows).step_by(MR) {
            let live = (rows - i).min(MR);
            // Rows past the tile repeat its last row; results dropped.
            let x: [&[f32]; MR] =
                std::array::from_fn(|r| &xs[(i + r.min(live - 1)) * stride..][..kc]);
            let at = dest.ptr.wrapping_add(i * dest.ld + c0);
            let full = live == MR && keep == NR;
            // SAFETY: rows `i..i + live` and columns `c0..c0 + keep` lie in
            // the tile, which the caller lends us exclusively.
            unsafe {
                add_block(at, dest.ld, live, keep, full, NR, |acc, ld| {
                    small_kernel(isa, x, panel, acc, ld)
                })
            };
        }
    }
}

/// AVX-512: each pair of panels (in L1) runs down the tile's activation
/// rows in blocks of `MR512`, the rows read in place when they are f32
/// (widened once otherwise).
///
/// # Safety
/// As [`run`]; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
unsafe fn block_avx512<X: Lanes, W: Lanes>(
    p: &Problem<'_, X, W>,
    t: &Tile,
    ks: Range<usize>,
    b: &KBlock<'_, f32>,
    x_pack: &mut Vec<f32>,
    dest: &Dest,
) {
    let kc = b.kc;
    let (xs, stride) = activations(p, t, ks, kc, x_pack);
    let row = |i: usize| xs[i * stride..][..kc].as_ptr();
    // SAFETY: as in `block_by_panel`; each row holds `kc` values and each
    // panel `kc * NR`; the caller checked AVX-512F.
    unsafe {
        by_groups(t, b, dest, row, |x, g, acc, ld| {
            avx512::tile(x, g, kc, acc, ld)
        })
    }
}

/// The `vdpbf16ps` register block: `PAIR_ROWS` activation rows × `PAIR_PANELS`
/// panels of 16 columns, 24 accumulators. Each step loads 4 weight vectors
/// and broadcasts 6 activation pairs for 24 products; against the f32
/// kernel's 12 × 2 (2 loads, 12 broadcasts) it ran 263-348 vs 184-339
/// GFLOP/s at m = 64 and 256 (alternated runs, Zen 4, 2 threads); 8 × 3 fell
/// between.
const PAIR_ROWS: usize = 6;
const PAIR_PANELS: usize = 4;

/// bf16 × bf16 on `vdpbf16ps`: per k block, the tile's weight columns are
/// packed into pair-interleaved panels (or taken from the weights' panels
/// packed ahead), which run down the activation rows read in place as k
/// pairs.
///
/// # Safety
/// As [`run`]; the CPU has AVX512-BF16.
#[cfg(target_arch = "x86_64")]
unsafe fn run_pairs(op: &Bf16Operands<'_>, plan: &Plan, t: &Tile, s: &mut Scratch, dest: &Dest) {
    let w_pack = pack_scratch(&mut s.w_pairs, op.packed.is_some(), plan, t);
    for ks in plan.k_blocks() {
        let kc = ks.len();
        let block = KBlock::ahead_or(op.packed, w_pack, op.k, t, ks.clone(), |w| {
            // SAFETY: AVX512-BF16 CPUs have AVX2.
            unsafe { pack_pairs(op.w, op.k, t.cols.clone(), ks.clone(), w) }
        });
        let row = |i: usize| op.x[(t.rows.start + i) * op.k + ks.start..][..kc].as_ptr();
        // SAFETY: each row holds `kc` bf16 (`kc` even: `k` and the k blocks
        // are), each panel `kc / 2` pair rows of 32; the caller lends us
        // `dest` and checked AVX512-BF16.
        unsafe {
            by_groups(t, &block, dest, row, |x, g, acc, ld| {
                avx512bf16::tile::<PAIR_ROWS, PAIR_PANELS>(x, g, kc / 2, acc, ld)
            })
        }
    }
}

/// Runs each group of `Q` panels of `b` down the tile's rows in blocks of
/// `R`; `row(i)` is tile row `i`'s activations for this k block, and
/// `kernel` adds one `R × Q`-panel register block at `acc`, row stride `ld`.
///
/// # Safety
/// As [`run`]; `kernel` must be sound for `R` rows from `row` and `Q`
/// panels of `b`.
#[cfg(target_arch = "x86_64")]
unsafe fn by_groups<X, T, const R: usize, const Q: usize>(
    t: &Tile,
    b: &KBlock<'_, T>,
    dest: &Dest,
    row: impl Fn(usize) -> *const X,
    kernel: impl Fn([*const X; R], [*const T; Q], *mut f32, usize),
) {
    let rows = t.rows.len();
    let width = Q * NR;
    for first in (0..b.cols.div_ceil(NR)).step_by(Q) {
        let group: [*const T; Q] = std::array::from_fn(|q| b.panel(first + q).as_ptr());
        let (c0, keep) = (first * NR, (b.cols - first * NR).min(width));
        for i in (0..rows).step_by(R) {
            let live = (rows - i).min(R);
            // Rows past the tile repeat its last row; results dropped.
            let x: [*const X; R] = std::array::from_fn(|r| row(i + r.min(live - 1)));
            let at = dest.ptr.wrapping_add(i * dest.ld + c0);
            let full = live == R && keep == width;
            // SAFETY: rows `i..i + live` and columns `c0..c0 + keep` lie in
            // the tile, which the caller lends us exclusively.
            unsafe {
                add_block(at, dest.ld, live, keep, full, width, |acc, ld| {
                    kernel(x, group, acc, ld)
                })
            };
        }
    }
}

/// The tile's activation rows for k range `ks` as f32 and their row
/// stride: read in place when they are f32, else widened into `x_pack`.
fn activations<'a, X: Lanes, W>(
    p: &'a Problem<'_, X, W>,
    t: &Tile,
    ks: Range<usize>,
    kc: usize,
    x_pack: &'a mut Vec<f32>,
) -> (&'a [f32], usize) {
    match X::as_f32(p.x) {
        Some(x) => (&x[t.rows.start * p.k + ks.start..], p.k),
        None => {
            pack_x(p.x, p.k, t.rows.clone(), ks, x_pack);
            (&x_pack[..], kc)
        }
    }
}

/// Runs `kernel` (which adds a full register block of `width` columns at
/// `acc`, row stride `ld`) into `at` directly when the block is `full`,
/// else into a scratch block whose first `live` rows and `keep` columns
/// are then added at `at`.
///
/// # Safety
/// `at` covers `live` rows of `keep` writable f32, `ld` apart (a full
/// block when `full`), that nothing else accesses during the call.
#[inline]
unsafe fn add_block(
    at: *mut f32,
    ld: usize,
    live: usize,
    keep: usize,
    full: bool,
    width: usize,
    kernel: impl FnOnce(*mut f32, usize),
) {
    if full {
        return kernel(at, ld);
    }
    let mut tmp = [0.0f32; MAX_BLOCK];
    kernel(tmp.as_mut_ptr(), width);
    for (r, sums) in tmp.chunks_exact(width).take(live).enumerate() {
        // SAFETY: row `r < live`, columns `..keep`, as the caller vouches.
        let row = unsafe { std::slice::from_raw_parts_mut(at.add(r * ld), keep) };
        row.iter_mut().zip(sums).for_each(|(a, v)| *a += v);
    }
}

/// The largest register block of any build, in f32.
const MAX_BLOCK: usize = max(
    max(MR512 * PANELS512 * NR, PAIR_ROWS * PAIR_PANELS * NR),
    max(MR * NR, amx::BLOCK * amx::BLOCK),
);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// `acc[r * ld + 0..NR] += Σ_k x[r][k] · panel[k][0..NR]` for `r < MR`.
///
/// # Safety
/// `acc` points at `MR` rows of `NR` writable f32, `ld` apart, that nothing
/// else accesses during the call.
#[inline]
unsafe fn small_kernel(isa: Isa, x: [&[f32]; MR], panel: &[f32], acc: *mut f32, ld: usize) {
    let kc = x.iter().map(|r| r.len()).min().unwrap_or(0);
    let kc = kc.min(panel.len() / NR);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
            let xp = x.map(<[f32]>::as_ptr);
            // SAFETY: each `x[r]` holds `kc` elements, `panel` `kc * NR`, the
            // caller vouches for `acc`; both ISAs are only built after
            // detecting AVX2 and FMA.
            unsafe { avx2::tile(xp, panel.as_ptr(), kc, acc, ld) }
        }
        // SAFETY (both): the caller vouches for `acc`.
        Isa::Portable => unsafe { portable::tile(x, panel, kc, acc, ld) },
        #[cfg(not(target_arch = "x86_64"))]
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
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                // SAFETY: every row has `kc` elements and `panel` `kc * NR`;
                // these builds are only returned after detecting AVX2, FMA
                // and F16C.
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

/// Packs bf16 weight rows `cols` (clamped to the last one past `cols.end`:
/// those columns' sums are dropped), k range `ks` (even length), into
/// panels of 16 columns, each `[ks.len() / 2 k pairs][16 columns][2]`, as
/// raw bf16 bits: the layout of AMX weight tiles and of the `vdpbf16ps`
/// kernel's panels.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
unsafe fn pack_pairs(w: &[u16], k: usize, cols: Range<usize>, ks: Range<usize>, out: &mut [u16]) {
    let kc = ks.len();
    assert!(kc.is_multiple_of(2), "bf16 pairs need an even k block");
    for (pi, panel) in out.chunks_exact_mut(kc * NR).enumerate() {
        let rows: [*const u16; NR] = std::array::from_fn(|c| {
            let j = (cols.start + pi * NR + c).min(cols.end - 1);
            w[j * k + ks.start..][..kc].as_ptr()
        });
        // SAFETY: every row has `kc` values, `panel` `NR · kc`; AVX2 is the
        // caller's to vouch for.
        unsafe { avx2::pack_pairs(rows, kc, panel.as_mut_ptr()) };
    }
}

/// Widens activation rows `rows`, k range `ks`, into `[row][kc]`.
fn pack_x<X: Element>(x: &[X], k: usize, rows: Range<usize>, ks: Range<usize>, out: &mut Vec<f32>) {
    out.clear();
    for i in rows {
        out.extend(x[i * k + ks.start..][..ks.len()].iter().map(|v| v.to_f32()));
    }
}

/// Room in `buf` for tile `t`'s panels of the plan's largest k block,
/// none when the weights were packed `ahead`.
fn pack_scratch<'a, T: Copy + Default>(
    buf: &'a mut Vec<T>,
    ahead: bool,
    plan: &Plan,
    t: &Tile,
) -> &'a mut [T] {
    match ahead {
        true => &mut [],
        false => aligned(buf, t.cols.len().div_ceil(NR) * plan.kc() * NR),
    }
}

/// A `len`-element view of `buf` starting on a 64-byte boundary, so packed
/// panel loads never straddle cache lines.
fn aligned<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    let pad = 64 / size_of::<T>();
    buf.resize(len + pad, T::default());
    let skip = buf.as_ptr().align_offset(64).min(pad);
    &mut buf[skip..skip + len]
}
