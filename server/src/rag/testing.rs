//! A deterministic embedder for tests: letter counts, L2-normalised.

use futures::future::BoxFuture;

use super::embedder::{EmbedError, Embedder};
use super::index::tests::toy_vector;

pub struct LetterEmbedder;

impl Embedder for LetterEmbedder {
    fn model_name(&self) -> &str {
        "test-letters"
    }

    fn dimension(&self) -> usize {
        26
    }

    fn max_seq_length(&self) -> usize {
        64
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move { Ok(texts.iter().map(|t| toy_vector(t)).collect()) })
    }

    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}
