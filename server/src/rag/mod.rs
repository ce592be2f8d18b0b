//! The bundled RAG module, API-compatible with KAITO's RAGEngine (v0.12):
//! the embedder that turns text into vectors, the splitter that cuts
//! documents into chunks, document indexes with hybrid (HNSW + BM25)
//! retrieval, KAITO's HTTP routes, chat completions with `index_name`, and
//! crash-safe persistence. docs/rag.md has the API and where and why it
//! differs from KAITO.

pub mod chat;
pub mod dense;
pub mod embedder;
pub mod error;
pub mod fusion;
pub mod index;
pub mod metrics;
pub mod paths;
pub mod persist;
pub mod routes;
pub mod service;
pub mod setup;
pub mod sparse;
pub mod splitter;
pub mod types;

#[cfg(test)]
pub mod testing;

pub use service::RagService;
pub use setup::{attach, persist_on_shutdown, RagArgs};
