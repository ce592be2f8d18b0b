//! The two measurements of one (block size, batch) point: tandem reads
//! from a peer process, and a plain in-process memcpy of the same blocks.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::VecDeque;

use tandem_transport::{Agent, ReadHandle, RemoteAgent};

/// Random distinct (remote, local) pairs for each iteration.
pub fn plan(num_blocks: u32, batch: usize, iters: usize, seed: u64) -> Vec<Vec<(u32, u32)>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut remote: Vec<u32> = (0..num_blocks).collect();
    let mut local = remote.clone();
    (0..iters)
        .map(|_| {
            remote.shuffle(&mut rng);
            local.shuffle(&mut rng);
            remote
                .iter()
                .copied()
                .zip(local.iter().copied())
                .take(batch)
                .collect()
        })
        .collect()
}

/// GB/s of reading every plan entry, one read per entry, with up to
/// `window` reads in flight (1: each read is waited for before the next).
pub fn tandem(
    agent: &Agent,
    remote: &RemoteAgent,
    plan: &[Vec<(u32, u32)>],
    block_bytes: u64,
    window: usize,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut bytes = 0;
    let mut in_flight = VecDeque::with_capacity(window);
    for pairs in plan {
        if in_flight.len() >= window.max(1) {
            let h: ReadHandle = in_flight.pop_front().expect("window is not empty");
            bytes += h.wait()?.bytes;
        }
        in_flight.push_back(agent.read_with_timeout(
            remote,
            pairs,
            None,
            Duration::from_secs(60),
        )?);
    }
    for h in in_flight {
        bytes += h.wait()?.bytes;
    }
    let secs = start.elapsed().as_secs_f64();
    debug_assert_eq!(
        bytes,
        plan.iter().map(|p| p.len() as u64).sum::<u64>() * block_bytes
    );
    Ok(bytes as f64 / secs / 1e9)
}

/// GB/s of copying the same blocks between two in-process arenas.
pub fn memcpy(src: &[u64], dst: &mut [u64], plan: &[Vec<(u32, u32)>], block_words: usize) -> f64 {
    let start = Instant::now();
    let mut bytes = 0u64;
    for pairs in plan {
        for &(r, l) in pairs {
            let (r, l) = (r as usize * block_words, l as usize * block_words);
            dst[l..l + block_words].copy_from_slice(&src[r..r + block_words]);
        }
        bytes += (pairs.len() * block_words * 8) as u64;
    }
    std::hint::black_box(&dst);
    bytes as f64 / start.elapsed().as_secs_f64() / 1e9
}
