//! Turns (remote block, local block) pairs into runs of adjacent ids, so
//! that a prefix of consecutive blocks moves as one transfer instead of one
//! per block (each transfer costs a request and, over the network, a round
//! trip). Validation happens here too, before anything is sent.

use std::collections::HashSet;

use crate::error::{Result, Side, TransportError};

/// `len` blocks starting at `remote` on the peer and `local` here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First source block on the peer.
    pub remote: u32,
    /// First destination block on this agent.
    pub local: u32,
    /// Blocks in the run (>= 1).
    pub len: u32,
}

/// Checks every id against the region sizes and refuses a local block that
/// is written twice, then sorts by remote id and merges pairs whose remote
/// and local ids both advance by one.
pub fn coalesce(pairs: &[(u32, u32)], remote_blocks: u32, local_blocks: u32) -> Result<Vec<Run>> {
    let mut seen = HashSet::with_capacity(pairs.len());
    for &(remote, local) in pairs {
        if remote >= remote_blocks {
            return Err(TransportError::BlockOutOfRange {
                side: Side::Remote,
                block: remote,
                num_blocks: remote_blocks,
            });
        }
        if local >= local_blocks {
            return Err(TransportError::BlockOutOfRange {
                side: Side::Local,
                block: local,
                num_blocks: local_blocks,
            });
        }
        if !seen.insert(local) {
            return Err(TransportError::DuplicateLocalBlock(local));
        }
    }
    let mut sorted = pairs.to_vec();
    sorted.sort_unstable();
    let mut runs: Vec<Run> = Vec::new();
    for (remote, local) in sorted {
        match runs.last_mut() {
            // Ids are < u32::MAX here (checked above), so +len cannot wrap.
            Some(run) if run.remote + run.len == remote && run.local + run.len == local => {
                run.len += 1
            }
            _ => runs.push(Run {
                remote,
                local,
                len: 1,
            }),
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn adjacent_pairs_merge() {
        let runs = coalesce(&[(3, 10), (1, 8), (2, 9), (7, 0), (8, 2)], 16, 16).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    remote: 1,
                    local: 8,
                    len: 3
                },
                Run {
                    remote: 7,
                    local: 0,
                    len: 1
                },
                Run {
                    remote: 8,
                    local: 2,
                    len: 1
                },
            ]
        );
    }

    #[test]
    fn out_of_range_and_duplicates_are_refused() {
        assert!(matches!(
            coalesce(&[(16, 0)], 16, 4),
            Err(TransportError::BlockOutOfRange {
                side: Side::Remote,
                block: 16,
                num_blocks: 16
            })
        ));
        assert!(matches!(
            coalesce(&[(0, 4)], 16, 4),
            Err(TransportError::BlockOutOfRange {
                side: Side::Local,
                block: 4,
                num_blocks: 4
            })
        ));
        assert!(matches!(
            coalesce(&[(0, 1), (5, 1)], 16, 4),
            Err(TransportError::DuplicateLocalBlock(1))
        ));
        assert!(coalesce(&[], 16, 4).unwrap().is_empty());
    }

    proptest! {
        /// Runs cover exactly the input pairs, and no two runs could merge.
        #[test]
        fn runs_cover_pairs(mut locals in proptest::sample::subsequence((0u32..64).collect::<Vec<_>>(), 0..64),
                            seed in any::<u64>()) {
            use rand::{seq::SliceRandom, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            locals.shuffle(&mut rng);
            let pairs: Vec<(u32, u32)> = locals.iter().enumerate().map(|(i, &l)| ((i as u32 * 7) % 64, l)).collect();
            let runs = coalesce(&pairs, 64, 64).unwrap();
            let mut expanded: Vec<(u32, u32)> = runs.iter()
                .flat_map(|r| (0..r.len).map(move |i| (r.remote + i, r.local + i)))
                .collect();
            let mut want = pairs.clone();
            expanded.sort_unstable();
            want.sort_unstable();
            prop_assert_eq!(expanded, want);
            for w in runs.windows(2) {
                prop_assert!(!(w[0].remote + w[0].len == w[1].remote && w[0].local + w[0].len == w[1].local));
            }
        }
    }
}
