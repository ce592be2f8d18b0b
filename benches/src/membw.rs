//! Memory-bandwidth probe: how fast this machine streams bytes right now,
//! measured beside the model so the floor and the engine see the same load.

use rayon::prelude::*;
use std::time::Instant;

/// Bytes moved per second (reads + writes) by a multi-threaded copy of
/// `bytes`, best of `reps`.
pub fn copy_bandwidth(bytes: usize, reps: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let chunk = (bytes / rayon::current_num_threads().max(1)).max(1 << 20);
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * bytes as f64 / best
}
