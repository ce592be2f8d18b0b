//! How one product is cut into rayon tasks and k blocks.
//!
//! Decode (`m <= SMALL_M`): one tile spans every activation row, so each
//! weight row is streamed from memory once and applied to all `m` rows while
//! it sits in L1/L2; tiles split `n` only, small enough for load balance.
//! Prefill: tiles of `MB × NB` outputs and k blocks of at most `KC`, so the
//! activation block (`MB × KC`) stays in L2 and the weight rows of one
//! register block (`C × KC`) stay in L1 while every row block passes by.

use std::ops::Range;

/// Activation rows per register block.
pub(super) const R: usize = 4;
/// Largest `m` served by the decode-shaped plan.
const SMALL_M: usize = 32;
/// Prefill tile rows (a multiple of `R`) and columns (a multiple of 12).
const MB: usize = 96;
const NB: usize = 192;
/// Longest k block; longer rows are cut into equal blocks of at most this.
const KC: usize = 512;
/// Aim for this many tiles per thread, so uneven progress evens out.
const TILES_PER_THREAD: usize = 8;
/// Decode tiles never get narrower than this many weight rows...
const MIN_NB: usize = 12;
/// ...nor wider, so huge `n` (the LM head) still spreads over the threads.
const MAX_NB: usize = 480;

pub(super) struct Plan {
    m: usize,
    n: usize,
    k: usize,
    mb: usize,
    nb: usize,
    kc: usize,
    /// Weight rows per register block: 4 when `m <= 2`, else 3.
    pub(super) c: usize,
}

/// The output rows and columns one task computes.
pub(super) struct Tile {
    pub(super) rows: Range<usize>,
    pub(super) cols: Range<usize>,
}

impl Plan {
    pub(super) fn new(m: usize, k: usize, n: usize, threads: usize) -> Self {
        let threads = threads.max(1);
        let c = if m <= 2 { 4 } else { 3 };
        let (mb, nb) = if m <= SMALL_M {
            let nb = n.div_ceil(threads * TILES_PER_THREAD);
            (m, round_up(nb, 12).clamp(MIN_NB, MAX_NB))
        } else {
            let mb = round_up(m.div_ceil(m.div_ceil(MB)), R);
            let row_tiles = m.div_ceil(mb);
            let want_cols = (threads * TILES_PER_THREAD).div_ceil(row_tiles);
            let nb = round_up(n.div_ceil(want_cols), 12).clamp(MIN_NB, NB);
            (mb, nb)
        };
        let kc = if k == 0 {
            1
        } else {
            k.div_ceil(k.div_ceil(KC))
        };
        Plan {
            m,
            n,
            k,
            mb,
            nb,
            kc,
            c,
        }
    }

    pub(super) fn num_tiles(&self) -> usize {
        self.m.div_ceil(self.mb) * self.n.div_ceil(self.nb)
    }

    /// Tile `t`, in row-major order over the tile grid.
    pub(super) fn tile(&self, t: usize) -> Tile {
        let col_tiles = self.n.div_ceil(self.nb);
        let (i, j) = (t / col_tiles * self.mb, t % col_tiles * self.nb);
        Tile {
            rows: i..(i + self.mb).min(self.m),
            cols: j..(j + self.nb).min(self.n),
        }
    }

    /// The k ranges, in order; none when `k == 0`.
    pub(super) fn k_blocks(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.k)
            .step_by(self.kc)
            .map(|s| s..(s + self.kc).min(self.k))
    }
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every output is covered exactly once, for decode and prefill shapes.
    #[test]
    fn tiles_partition_the_output() {
        for &(m, k, n) in &[
            (1, 896, 9728),
            (5, 17, 7),
            (33, 1000, 300),
            (2048, 4864, 896),
        ] {
            for threads in [1, 2, 16] {
                let p = Plan::new(m, k, n, threads);
                let mut seen = vec![0u8; m * n];
                for t in 0..p.num_tiles() {
                    let tile = p.tile(t);
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
                assert!(ks.iter().all(|r| r.len() <= KC));
            }
        }
    }
}
