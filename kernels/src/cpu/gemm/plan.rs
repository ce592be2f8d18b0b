//! How one product is cut into rayon tasks, k blocks and register blocks.
//!
//! Three regimes, by the number of activation rows `m`:
//! - `Stream` (memory-bound decode: `m <= 8` for f32 weights, `<= 3` for
//!   bf16/f16): one weight row at a time against up to 8 activation rows,
//!   so each thread reads its weight tile as one sequential stream (the
//!   hardware prefetcher follows one stream per core well, several
//!   interleaved rows poorly: measured 30 vs 15–20 GB/s per core).
//! - `Block` (`m <= SMALL_M`, batched decode; below `AMX_MIN_M` or
//!   `PAIRS_MIN_M` when the product runs on AMX tiles or bf16 pairs): 4
//!   activation rows × 3 weight rows per register block, so each weight
//!   vector loaded feeds 4 FMAs and each activation vector 3; a software
//!   prefetch walks ahead through the 3 rows as one linear stream.
//! - `Packed` (prefill): tiles of `MB × NB` outputs and k blocks of `KC`;
//!   each task widens its weight block into 16-column panels once and runs
//!   a 6 × 16 (AVX2) or 12 × 32 (AVX-512) broadcast kernel with both
//!   operands in L1, or packs bf16 weights pair-interleaved for AMX tiles
//!   (their own k blocks) or for the `vdpbf16ps` kernel.
//!
//! Decode tiles span all `m` rows and split `n` only (every weight row is
//! read from memory once); they never cut k, since two passes over a row
//! would turn one sequential stream into strided ones.

use std::ops::Range;

const STREAM_M: usize = 8;
const STREAM_M_NARROW: usize = 3;
const SMALL_M: usize = 32;
/// Fewest rows that run on AMX tiles (bf16 × bf16 on an AMX CPU): at 16
/// rows they beat the 4 × 3 block by 1.1-1.6×, at 8 they lose (0.6-0.9×).
const AMX_MIN_M: usize = 16;
/// Fewest rows that run the packed `vdpbf16ps` kernel (bf16 × bf16 on an
/// AVX512-BF16 CPU). Measured on Zen 4 (2 threads, Qwen2.5-0.5B shapes): at
/// 12 rows it ran 132-211 GFLOP/s against the 4 × 3 block's 70-97; at 8
/// the block led (89-133 against 63-93).
const PAIRS_MIN_M: usize = 9;
/// Fewest rows that run the AVX-512 f32 kernel on panels packed ahead.
const F32_PANELS_MIN_M: usize = 9;

/// How a packed product multiplies, which sets where packing pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Compute {
    /// Widened to f32.
    F32,
    /// f32 × f32 from panels packed ahead (no packing per call).
    F32Panels,
    /// bf16 pairs with `vdpbf16ps`.
    Bf16Pairs,
    /// bf16 AMX tiles.
    Bf16Tiles,
}
/// Prefill tiles: at most `MB` rows (more rows per weight pack; the
/// activation block streams from L2/L3 fine) and `NB` columns, k blocks of
/// at most `KC` (the packed panel, `KC × NR` f32 = 28 KiB, stays in L1 next
/// to the activation rows of one register block).
const MB: usize = 1020;
const NB: usize = 192;
const KC: usize = 448;
/// Register block of the packed kernel.
pub(super) const MR: usize = 6;
pub(super) const NR: usize = 16;
/// Aim for this many tiles per thread, so uneven progress evens out.
const TILES_PER_THREAD: usize = 8;
/// Decode tiles hold at least this many weight bytes (handing tasks out and
/// waking workers costs microseconds: a k/v projection ran 3× faster as one
/// tile than as 11) and at most `MAX_NB` rows, so huge `n` (the LM head)
/// still spreads over the threads.
const MIN_TILE_BYTES: usize = 512 << 10;
const MAX_NB: usize = 480;
/// How far ahead (bytes) the decode kernels prefetch the weight stream.
/// Measured: bf16 streaming gains ~10% at 8 KiB over 4 KiB; the 4 × 3 block
/// (slower per byte, three rows in flight) gains up to 30% at 16 KiB.
const PREFETCH_STREAM: usize = 8 << 10;
const PREFETCH_BLOCK: usize = 16 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Stream,
    Block,
    Packed,
}

impl Mode {
    /// The regime for `m` activation rows against weights of `w_bytes`
    /// bytes each, multiplied as `compute` when packed.
    pub(super) fn of(m: usize, w_bytes: usize, compute: Compute) -> Self {
        // Narrow weights carry twice the FMAs per byte read, so they turn
        // compute-bound (and want the 4 × 3 block) at fewer rows.
        let stream_m = if w_bytes >= 4 {
            STREAM_M
        } else {
            STREAM_M_NARROW
        };
        let small_m = match compute {
            Compute::F32 => SMALL_M,
            Compute::F32Panels => F32_PANELS_MIN_M - 1,
            Compute::Bf16Pairs => PAIRS_MIN_M - 1,
            Compute::Bf16Tiles => AMX_MIN_M - 1,
        };
        match m {
            _ if m <= stream_m => Mode::Stream,
            _ if m <= small_m => Mode::Block,
            _ => Mode::Packed,
        }
    }
}

pub(super) struct Plan {
    pub(super) mode: Mode,
    /// How the packed kernel multiplies (see `packed::compute`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) compute: Compute,
    m: usize,
    n: usize,
    k: usize,
    row_tiles: usize,
    col_tiles: usize,
    /// Tile columns are whole multiples of this (a packed panel's width).
    col_unit: usize,
    kc: usize,
    /// Activation rows per register block (dot-product modes).
    pub(super) r: usize,
    /// Weight rows per register block (dot-product modes).
    pub(super) c: usize,
    /// Software prefetch distance in bytes (0: none).
    pub(super) prefetch: usize,
}

/// The output rows and columns one task computes.
pub(super) struct Tile {
    pub(super) rows: Range<usize>,
    pub(super) cols: Range<usize>,
}

impl Plan {
    /// `compute`: bf16 pairs and AMX tiles out-run the 4 × 3 dot-product
    /// block from fewer rows than the widening f32 kernel.
    pub(super) fn new(
        m: usize,
        k: usize,
        n: usize,
        w_bytes: usize,
        threads: usize,
        compute: Compute,
    ) -> Self {
        let threads = threads.max(1);
        let target = threads * TILES_PER_THREAD;
        let mode = Mode::of(m, w_bytes, compute);
        let (r, c) = match mode {
            Mode::Stream => (m.div_ceil(m.div_ceil(8)), 1),
            _ => (4, 3),
        };
        let (row_tiles, col_tiles, col_unit, kc) = if mode == Mode::Packed {
            let row_tiles = m.div_ceil(MB);
            let panels = n.div_ceil(NR);
            let cols = target.div_ceil(row_tiles).max(panels.div_ceil(NB / NR));
            let cols = balance(row_tiles, cols, panels, threads);
            // Even k blocks, so bf16 pair kernels never split a pair
            // (`KC` is even, so the rounding keeps them within it).
            let kc = k.div_ceil(k.div_ceil(KC).max(1)).next_multiple_of(2);
            (row_tiles, cols, NR, kc)
        } else {
            let min_rows = MIN_TILE_BYTES.div_ceil(k.max(1) * w_bytes);
            let cols = target.min(n / min_rows).max(n.div_ceil(MAX_NB));
            (1, balance(1, cols.max(1), n, threads), 1, k)
        };
        Plan {
            mode,
            compute,
            m,
            n,
            k,
            row_tiles: row_tiles.max(1),
            col_tiles,
            col_unit,
            kc: kc.max(1),
            r,
            c,
            prefetch: match mode {
                Mode::Stream => PREFETCH_STREAM,
                Mode::Block => PREFETCH_BLOCK,
                Mode::Packed => 0,
            },
        }
    }

    pub(super) fn num_tiles(&self) -> usize {
        self.row_tiles * self.col_tiles
    }

    /// Tile `t`, in row-major order over the tile grid; rows and column
    /// units are shared out as evenly as integers allow.
    pub(super) fn tile(&self, t: usize) -> Tile {
        let (i, j) = (t / self.col_tiles, t % self.col_tiles);
        let units = self.n.div_ceil(self.col_unit);
        let col = |j: usize| (j * units / self.col_tiles * self.col_unit).min(self.n);
        let row = |i: usize| i * self.m / self.row_tiles;
        Tile {
            rows: row(i)..row(i + 1),
            cols: col(j)..col(j + 1),
        }
    }

    /// The k ranges, in order; none when `k == 0`.
    pub(super) fn k_blocks(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.k)
            .step_by(self.kc)
            .map(|s| s..(s + self.kc).min(self.k))
    }

    /// Largest k block.
    pub(super) fn kc(&self) -> usize {
        self.kc.min(self.k)
    }
}

/// Raises `cols` (at most to `units`) until the tile count is a multiple of
/// the thread count, so equal tiles end together; one tile stays one.
fn balance(rows: usize, mut cols: usize, units: usize, threads: usize) -> usize {
    while rows * cols > 1 && !(rows * cols).is_multiple_of(threads) && cols < units {
        cols += 1;
    }
    cols.min(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every output is covered exactly once and k is cut as documented.
    #[test]
    fn tiles_partition_the_output() {
        let shapes = [
            (1, 896, 9728),
            (5, 17, 7),
            (33, 1000, 300),
            (2048, 4864, 896),
            (64, 4862, 40),
        ];
        for &(m, k, n) in &shapes {
            for threads in [1, 2, 16] {
                let p = Plan::new(m, k, n, 4, threads, Compute::F32);
                let mut seen = vec![0u8; m * n];
                for t in 0..p.num_tiles() {
                    let tile = p.tile(t);
                    assert!(!tile.rows.is_empty() && !tile.cols.is_empty());
                    for i in tile.rows.clone() {
                        for j in tile.cols.clone() {
                            seen[i * n + j] += 1;
                        }
                    }
                }
                assert!(
                    seen.iter().all(|&s| s == 1),
                    "{m}x{k}x{n} threads {threads}"
                );
                let ks: Vec<_> = p.k_blocks().collect();
                assert_eq!(ks.first().map(|r| r.start), Some(0));
                assert_eq!(ks.last().map(|r| r.end), Some(k));
                let max = if p.mode == Mode::Packed { KC } else { k };
                assert!(ks.iter().all(|r| r.len() <= max));
                if p.mode == Mode::Packed && k.is_multiple_of(2) {
                    assert!(ks.iter().all(|r| r.len() % 2 == 0), "{m}x{k}x{n}");
                }
            }
        }
    }
}
