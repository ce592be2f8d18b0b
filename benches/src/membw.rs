//! Memory-bandwidth probes: how fast this machine streams bytes right now,
//! measured beside the model so the floor and the engine see the same load.
//! Decode only reads its weights, so its floor is the read stream; a copy
//! also counts its writes and overstates what reads alone reach (46 vs 28
//! GB/s on a 2-vCPU Xeon VM).

use rayon::prelude::*;
use std::time::Instant;

/// Bytes read per second by a multi-threaded sum over `bytes`, best of
/// `reps`: the stream a decode step's weight reads can reach at most.
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    let words = vec![1u64; bytes / 8];
    let chunk = (words.len() / rayon::current_num_threads().max(1)).max(1 << 17);
    let mut best = f64::MAX;
    let mut total = 0u64;
    for _ in 0..reps {
        let t = Instant::now();
        total = total.wrapping_add(words.par_chunks(chunk).map(sum_lanes).sum::<u64>());
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(total);
    (words.len() * 8) as f64 / best
}

/// Sum in 8 independent lanes (integer adds are associative, so the loop
/// vectorises and the loads, not the adds, bound it).
fn sum_lanes(xs: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    let chunks = xs.chunks_exact(8);
    let rest: u64 = chunks.remainder().iter().fold(0, |a, &b| a.wrapping_add(b));
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.wrapping_add(v);
        }
    }
    lanes.iter().fold(rest, |a, &b| a.wrapping_add(b))
}
