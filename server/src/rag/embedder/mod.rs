//! PLACEHOLDER until branch rag-embed lands: the interface agreed in
//! /work/notes/rag-interface.md, with no model behind it. The merge of
//! rag-embed replaces this whole directory (and wires `with_embedder` into
//! `tandem serve`; until then RAG stays off there).
#![allow(dead_code)]

use std::sync::Arc;

use futures::future::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{0}")]
    Failed(String),
}

pub trait Embedder: Send + Sync + 'static {
    fn model_name(&self) -> &str;
    fn dimension(&self) -> usize;
    fn max_seq_length(&self) -> usize;
    /// L2-normalized vectors, one per text, same order.
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>>;
    fn count_tokens(&self, text: &str) -> usize;
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct EmbedderArgs {
    /// Directory of the sentence-transformers embedding model.
    #[arg(long)]
    pub embedding_model: Option<std::path::PathBuf>,
}

pub fn from_args(_args: &EmbedderArgs) -> Result<Arc<dyn Embedder>, EmbedError> {
    Err(EmbedError::Failed(
        "no embedder in this build yet (branch rag-embed)".into(),
    ))
}
