//! Picks a worker for a request, like llm-d's inference scheduler: a
//! weighted sum of prefix overlap (blocks the worker already caches, from
//! its KV events), queue depth and KV-cache headroom. Near-ties are broken
//! at random so a burst of requests does not herd onto one worker.

use std::collections::HashSet;

use tandem_engine::kv_cache::BlockHash;

/// How the router picks among workers of one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Routing {
    /// Prefix overlap plus load (the default).
    KvAware,
    /// Load only.
    LeastLoaded,
    /// In turn, ignoring load and caches (the baseline of comparisons).
    RoundRobin,
}

#[derive(Clone, Copy, Debug)]
pub struct Weights {
    pub prefix: f64,
    pub queue: f64,
    pub kv_usage: f64,
}

/// One worker as the scorer sees it.
pub struct Candidate<'a> {
    /// Requests running or waiting there, counting the router's own
    /// assignments that its status does not show yet.
    pub queue: usize,
    pub kv_usage: f64,
    pub cached: &'a HashSet<BlockHash>,
}

/// A candidate's score and its parts, for the debug log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub total: f64,
    /// Leading prompt blocks the worker has cached.
    pub overlap_blocks: usize,
    pub prefix: f64,
    pub queue: f64,
    pub kv: f64,
}

/// Scores within this of the best count as tied.
const TIE: f64 = 1e-3;

/// Leading blocks of `prompt` found in `cached`.
pub fn overlap(prompt: &[BlockHash], cached: &HashSet<BlockHash>) -> usize {
    prompt.iter().take_while(|h| cached.contains(h)).count()
}

pub fn score(prompt: &[BlockHash], c: &Candidate, max_queue: usize, w: &Weights) -> Score {
    let overlap_blocks = overlap(prompt, c.cached);
    let prefix = if prompt.is_empty() {
        0.0
    } else {
        overlap_blocks as f64 / prompt.len() as f64
    };
    let queue = 1.0 - c.queue as f64 / (max_queue.max(1)) as f64;
    let kv = 1.0 - c.kv_usage.clamp(0.0, 1.0);
    Score {
        total: w.prefix * prefix + w.queue * queue + w.kv_usage * kv,
        overlap_blocks,
        prefix,
        queue,
        kv,
    }
}

/// What [`pick`] decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Pick {
    /// Index of the best candidate (random among near-ties).
    pub chosen: usize,
    /// Every candidate's score, in their order.
    pub scores: Vec<Score>,
}

/// The best candidate and every score; `None` when there are no candidates.
pub fn pick(
    prompt: &[BlockHash],
    candidates: &[Candidate],
    w: &Weights,
    rng: &mut impl rand::Rng,
) -> Option<Pick> {
    if candidates.is_empty() {
        return None;
    }
    // Normalise queues by the busiest worker plus one, so an idle pool
    // scores everyone the same and one queued request already matters.
    let max_queue = candidates.iter().map(|c| c.queue).max().unwrap_or(0) + 1;
    let scores: Vec<Score> = candidates
        .iter()
        .map(|c| score(prompt, c, max_queue, w))
        .collect();
    let best = scores
        .iter()
        .map(|s| s.total)
        .fold(f64::NEG_INFINITY, f64::max);
    let tied: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i].total >= best - TIE)
        .collect();
    let chosen = tied[rng.random_range(0..tied.len())];
    Some(Pick { chosen, scores })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const W: Weights = Weights {
        prefix: 2.0,
        queue: 1.0,
        kv_usage: 1.0,
    };

    fn hashes(h: &[u64]) -> Vec<BlockHash> {
        h.iter().map(|&h| BlockHash(h)).collect()
    }

    fn set(h: &[u64]) -> HashSet<BlockHash> {
        hashes(h).into_iter().collect()
    }

    #[test]
    fn overlap_counts_only_the_leading_run() {
        let cached = set(&[1, 2, 4]);
        assert_eq!(overlap(&hashes(&[1, 2, 3, 4]), &cached), 2);
        assert_eq!(overlap(&hashes(&[3, 1]), &cached), 0);
    }

    #[test]
    fn the_worker_holding_the_prefix_wins_at_equal_load() {
        let (a, b) = (set(&[]), set(&[10, 11, 12]));
        let cands = [
            Candidate {
                queue: 0,
                kv_usage: 0.1,
                cached: &a,
            },
            Candidate {
                queue: 0,
                kv_usage: 0.1,
                cached: &b,
            },
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..20 {
            let p = pick(&hashes(&[10, 11, 12, 13]), &cands, &W, &mut rng).unwrap();
            assert_eq!(p.chosen, 1);
            assert_eq!(p.scores[1].overlap_blocks, 3);
        }
    }

    #[test]
    fn a_long_queue_outweighs_a_small_overlap() {
        let (a, b) = (set(&[]), set(&[10]));
        let cands = [
            Candidate {
                queue: 0,
                kv_usage: 0.0,
                cached: &a,
            },
            Candidate {
                queue: 30,
                kv_usage: 0.9,
                cached: &b,
            },
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let prompt = hashes(&[10, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(pick(&prompt, &cands, &W, &mut rng).unwrap().chosen, 0);
    }

    #[test]
    fn ties_spread_over_the_tied_workers() {
        let empty = set(&[]);
        let cands: Vec<Candidate> = (0..4)
            .map(|_| Candidate {
                queue: 0,
                kv_usage: 0.0,
                cached: &empty,
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            seen[pick(&hashes(&[1, 2]), &cands, &W, &mut rng).unwrap().chosen] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn no_candidates_no_pick() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        assert!(pick(&hashes(&[1]), &[], &W, &mut rng).is_none());
    }
}
