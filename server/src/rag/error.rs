//! Errors of the RAG module. Each variant is one of KAITO RAGEngine's
//! answers (not found, conflict, bad request, a field out of range, server
//! error); the API turns them into its HTTP statuses and bodies
//! (`api/rag_errors.rs`).

use serde_json::Value;

use super::embedder::EmbedError;

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error("No such index: '{0}' exists.")]
    IndexNotFound(String),
    #[error("Index '{0}' already exists. Use a different name, delete the existing index first, or load with overwrite=true.")]
    IndexExists(String),
    #[error("{0}")]
    BadRequest(String),
    /// One field out of range: `loc` is FastAPI's location (`["query", "limit"]`).
    #[error("{msg}")]
    Invalid {
        loc: Vec<String>,
        msg: String,
        input: Value,
    },
    #[error("Path does not exist: {0}")]
    PathNotFound(String),
    #[error("embedding failed: {0}")]
    Embed(#[from] EmbedError),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Internal(String),
}

impl RagError {
    pub fn invalid(loc: &[&str], msg: impl Into<String>, input: Value) -> Self {
        RagError::Invalid {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: msg.into(),
            input,
        }
    }
}

impl From<std::io::Error> for RagError {
    fn from(e: std::io::Error) -> Self {
        RagError::Storage(format!("storage error: {e}"))
    }
}
