//! Keyword search: BM25 over chunks with the `bm25` crate (English
//! stemming and stop words, k1 = 1.2, b = 0.75). Its scorer updates in
//! place on upsert and remove, so changes show in the next query; the
//! term-frequency part depends on the average chunk length, so when that
//! drifts by a fifth from what the embeddings were made with, the owner
//! re-embeds every chunk ([`SparseIndex::needs_refit`]).

use bm25::{Embedder, EmbedderBuilder, Language, Scorer};

const K1: f32 = 1.2;
const B: f32 = 0.75;

pub struct SparseIndex {
    embedder: Embedder,
    scorer: Scorer<usize>,
    /// Token count of each live chunk, for the true average length.
    lengths: std::collections::HashMap<usize, usize>,
    total_tokens: usize,
}

impl Default for SparseIndex {
    fn default() -> Self {
        Self::with_avgdl(0.0)
    }
}

impl SparseIndex {
    fn with_avgdl(avgdl: f32) -> Self {
        SparseIndex {
            embedder: EmbedderBuilder::with_avgdl(avgdl)
                .language_mode(Language::English)
                .k1(K1)
                .b(B)
                .build(),
            scorer: Scorer::new(),
            lengths: Default::default(),
            total_tokens: 0,
        }
    }

    /// Re-made from every live chunk, with their true average length.
    pub fn build<'a>(chunks: impl IntoIterator<Item = (usize, &'a str)>) -> Self {
        let chunks: Vec<(usize, &str)> = chunks.into_iter().collect();
        let probe = Self::default();
        let total: usize = chunks
            .iter()
            .map(|(_, t)| probe.embedder.embed(t).0.len())
            .sum();
        let avgdl = if chunks.is_empty() {
            0.0
        } else {
            total as f32 / chunks.len() as f32
        };
        let mut index = Self::with_avgdl(avgdl);
        for (slot, text) in chunks {
            index.upsert(slot, text);
        }
        index
    }

    pub fn upsert(&mut self, slot: usize, text: &str) {
        self.remove(slot);
        let embedding = self.embedder.embed(text);
        let len = embedding.0.len();
        self.scorer.upsert(&slot, embedding);
        self.lengths.insert(slot, len);
        self.total_tokens += len;
    }

    pub fn remove(&mut self, slot: usize) {
        if let Some(len) = self.lengths.remove(&slot) {
            self.total_tokens -= len;
            self.scorer.remove(&slot);
        }
    }

    /// True when the embeddings' average length is off by more than 20 %.
    pub fn needs_refit(&self) -> bool {
        if self.lengths.is_empty() {
            return false;
        }
        let actual = self.total_tokens as f32 / self.lengths.len() as f32;
        let used = self.embedder.avgdl();
        used <= 0.0 || (actual - used).abs() > 0.2 * used
    }

    /// Matching slots, best first (ties by slot, so ranks are
    /// deterministic), with their BM25 scores.
    pub fn search(&self, query: &str, k: usize, pass: impl Fn(usize) -> bool) -> Vec<(usize, f32)> {
        let q = self.embedder.embed(query);
        let mut hits: Vec<(usize, f32)> = self
            .scorer
            .matches(&q)
            .into_iter()
            .filter(|d| pass(d.id))
            .map(|d| (d.id, d.score))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> SparseIndex {
        SparseIndex::build([
            (0, "The cat sat on the mat."),
            (1, "Dogs are loyal companions and love walks."),
            (2, "A cat and a dog can be friends."),
            (3, "Quantum chromodynamics describes the strong force."),
        ])
    }

    #[test]
    fn ranks_keyword_matches_and_skips_the_rest() {
        let s = corpus();
        let hits = s.search("strong force", 10, |_| true);
        assert_eq!(hits[0].0, 3);
        assert_eq!(hits.len(), 1);
        let cats: Vec<usize> = s.search("cats", 10, |_| true).iter().map(|h| h.0).collect();
        assert_eq!(cats.len(), 2, "stemming finds 'cat': {cats:?}");
        assert!(cats.contains(&0) && cats.contains(&2));
    }

    #[test]
    fn removal_and_update_show_at_once() {
        let mut s = corpus();
        s.remove(3);
        assert!(s.search("strong force", 10, |_| true).is_empty());
        s.upsert(1, "The strong force binds quarks.");
        assert_eq!(s.search("strong force", 10, |_| true)[0].0, 1);
        assert!(s.search("strong", 10, |slot| slot != 1).is_empty());
    }

    #[test]
    fn refit_is_asked_for_when_lengths_drift() {
        let mut s = corpus();
        assert!(!s.needs_refit());
        let long = "word ".repeat(400);
        for slot in 10..20 {
            s.upsert(slot, &long);
        }
        assert!(s.needs_refit());
    }
}
