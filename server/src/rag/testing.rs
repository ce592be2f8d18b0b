//! A deterministic embedder (letter counts, L2-normalised) and a RAG
//! service over it, for the unit tests and the fuzz entry points
//! (`crate::fuzzing`, under the `fuzzing` feature).

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::embedder::{EmbedError, Embedder};
use super::service::{ChatSettings, PromptOrder, RagService};

/// A deterministic bag-of-letters "embedding".
pub fn toy_vector(text: &str) -> Vec<f32> {
    let mut v = [0f32; 26];
    for b in text
        .to_ascii_lowercase()
        .bytes()
        .filter(u8::is_ascii_lowercase)
    {
        v[(b - b'a') as usize] += 1.0;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / n).collect()
}

/// A service over [`LetterEmbedder`] storing under `root`, its log on.
pub fn service(root: &Path) -> Arc<RagService> {
    Arc::new(RagService::new(
        Arc::new(LetterEmbedder),
        root.to_path_buf(),
        ChatSettings {
            prompt_order: PromptOrder::Stable,
            min_similarity: 0.1,
        },
    ))
}

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
