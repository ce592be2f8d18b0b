//! Sentence embeddings for RAG and `POST /v1/embeddings`: a local BERT-family
//! model run with candle on its own threads, or a remote service (KAITO's
//! embedding endpoint or an OpenAI `/v1/embeddings` URL) behind one trait, so
//! the index and the API never care which.

mod args;
mod bert;
mod local;
mod locate;
mod ops;
mod pooling;
mod remote;
mod remote_kaito;
mod remote_openai;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use args::{EmbedderArgs, RemoteKind};
pub use local::LocalEmbedder;
pub use locate::locate_model_dir;
pub use remote_kaito::KaitoEmbedder;
pub use remote_openai::OpenAiEmbedder;

/// Turns texts into L2-normalized vectors.
pub trait Embedder: Send + Sync + 'static {
    /// Model name reported by /v1/embeddings and stored with an index.
    fn model_name(&self) -> &str;
    fn dimension(&self) -> usize;
    /// Max tokens per text; longer texts are truncated.
    fn max_seq_length(&self) -> usize;
    /// L2-normalized vectors, one per text, same order. Runs off the async
    /// runtime (local: its own threads; remote: HTTP).
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>>;
    /// Token count of a text under the embedder's tokenizer (for truncation
    /// flags). Remote embedders have no tokenizer and estimate.
    fn count_tokens(&self, text: &str) -> usize;
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The default search found no model directory; the message says what to do.
    #[error("{0}")]
    ModelNotFound(String),
    /// The model directory exists but something in it is missing or wrong.
    #[error("cannot load the embedding model from {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    /// The flags do not describe a usable embedder.
    #[error("embedder configuration: {0}")]
    Config(String),
    #[error("tokenizing for the embedder failed: {0}")]
    Tokenize(String),
    #[error("embedding model forward failed: {0}")]
    Inference(String),
    /// The remote embedding service failed or answered something unusable.
    #[error("remote embedding service {url}: {message}")]
    Remote { url: String, message: String },
    /// The local embedder's worker threads have stopped (shutdown or a panic).
    #[error("the embedding worker threads have stopped")]
    WorkerStopped,
}

/// Builds the configured embedder from CLI args (local dir, or remote URL + kind + token).
pub fn from_args(args: &EmbedderArgs) -> Result<Arc<dyn Embedder>, EmbedError> {
    if let Some(url) = &args.remote_embedding_url {
        if args.embedding_model.is_some() {
            return Err(EmbedError::Config(
                "--embedding-model and --remote-embedding-url exclude each other; pass one".into(),
            ));
        }
        let token = args.remote_embedding_token.clone();
        let model = args.remote_embedding_model.clone();
        return Ok(match args.remote_embedding_kind {
            RemoteKind::Kaito => Arc::new(KaitoEmbedder::new(url, model, token)?),
            RemoteKind::Openai => Arc::new(OpenAiEmbedder::new(url, model, token)?),
        });
    }
    let dir = locate_model_dir(args.embedding_model.as_deref())?;
    let embedder = LocalEmbedder::load(&dir, args.embedding_threads, args.embedding_batch_size)?;
    Ok(Arc::new(embedder))
}
