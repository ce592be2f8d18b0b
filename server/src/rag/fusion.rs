//! Hybrid ranking as KAITO's `HybridRetriever` does it, 0.7 × dense score
//! plus 0.3 × 1 / (1 + BM25 rank), but with the dense score a cosine
//! similarity (higher is better). KAITO feeds FAISS L2 *distances* into the
//! same sum, so its least similar chunk ranks first.
//!
//! Every candidate gets its true cosine, including those only BM25 found,
//! so the dense part of the sum never counts a keyword hit as dissimilar.

pub const DENSE_WEIGHT: f32 = 0.7;
pub const SPARSE_WEIGHT: f32 = 0.3;

/// Where a result was found, as KAITO names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Both,
    DenseOnly,
    SparseOnly,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Both => "both",
            Source::DenseOnly => "dense_only",
            Source::SparseOnly => "sparse_only",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fused {
    pub slot: usize,
    pub score: f32,
    pub dense_score: f32,
    /// 1 / (1 + rank) among BM25 matches; 0 when BM25 did not match.
    pub sparse_score: f32,
    pub source: Source,
}

/// Merges dense hits (slot, cosine; best first) and BM25 hits (slot; best
/// first), keeps the best `k`. `cosine` gives the similarity of a slot that
/// only BM25 found. Ties break on slot, so the order is deterministic.
pub fn fuse(
    dense: &[(usize, f32)],
    sparse: &[usize],
    k: usize,
    cosine: impl Fn(usize) -> f32,
) -> Vec<Fused> {
    let mut out: Vec<Fused> = dense
        .iter()
        .map(|&(slot, cos)| {
            let rank = sparse.iter().position(|&s| s == slot);
            Fused {
                slot,
                score: 0.0,
                dense_score: cos,
                sparse_score: rank.map_or(0.0, rank_score),
                source: if rank.is_some() {
                    Source::Both
                } else {
                    Source::DenseOnly
                },
            }
        })
        .collect();
    for (rank, &slot) in sparse.iter().enumerate() {
        if !dense.iter().any(|&(s, _)| s == slot) {
            out.push(Fused {
                slot,
                score: 0.0,
                dense_score: cosine(slot),
                sparse_score: rank_score(rank),
                source: Source::SparseOnly,
            });
        }
    }
    for f in &mut out {
        f.score = DENSE_WEIGHT * f.dense_score + SPARSE_WEIGHT * f.sparse_score;
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.slot.cmp(&b.slot)));
    out.truncate(k);
    out
}

fn rank_score(rank: usize) -> f32 {
    1.0 / (1.0 + rank as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_similar_first_and_keyword_hits_lift() {
        // Dense: slot 1 most similar, then 2, then 3.
        let dense = [(1, 0.9), (2, 0.8), (3, 0.1)];
        // BM25 ranks slot 2 first, then slot 4 that dense did not return.
        let sparse = [2, 4];
        let fused = fuse(&dense, &sparse, 10, |s| if s == 4 { 0.5 } else { 0.0 });
        let order: Vec<usize> = fused.iter().map(|f| f.slot).collect();
        // 2: .7*.8+.3 = .86; 1: .63; 4: .35+.15 = .50; 3: .07
        assert_eq!(order, vec![2, 1, 4, 3]);
        assert_eq!(fused[0].source, Source::Both);
        assert_eq!(fused[1].source, Source::DenseOnly);
        assert_eq!(fused[2].source, Source::SparseOnly);
        assert!((fused[2].dense_score - 0.5).abs() < 1e-6);
        assert!((fused[0].score - 0.86).abs() < 1e-6);
        assert!((fused[2].sparse_score - 0.5).abs() < 1e-6);
    }

    /// KAITO's bug, spelled out: with distances in place of similarities
    /// the farthest chunk would win. Cosine keeps the nearest first.
    #[test]
    fn dense_only_ranking_is_by_similarity_not_distance() {
        let near = (7, 0.95);
        let far = (8, 0.05);
        let fused = fuse(&[near, far], &[], 2, |_| 0.0);
        assert_eq!(fused[0].slot, 7);
        assert!(fused[0].score > fused[1].score);
    }

    #[test]
    fn truncates_to_k() {
        let dense: Vec<(usize, f32)> = (0..10).map(|i| (i, 1.0 - i as f32 / 10.0)).collect();
        assert_eq!(fuse(&dense, &[], 3, |_| 0.0).len(), 3);
    }
}
