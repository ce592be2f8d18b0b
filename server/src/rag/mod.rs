//! The bundled RAG module, API-compatible with KAITO's RAGEngine (v0.12):
//! the embedder that turns text into vectors, the splitter that cuts
//! documents into chunks, document indexes with hybrid (HNSW + BM25)
//! retrieval, crash-safe persistence and a write-ahead log (every
//! acknowledged write survives `kill -9`), and [`RagService`], which does every
//! operation on a server's indexes. It is a service the API calls and
//! knows nothing of HTTP: KAITO's routes and chat completions with
//! `index_name` are in `api/rag_routes.rs` and `api/rag_chat.rs`.
//! docs/rag.md has the API and where and why it differs from KAITO.
//!
//! Public: the embedder and the index with what its interface names (the
//! examples measure them); the rest serves the API inside the crate.

pub mod dense;
pub(crate) mod durable;
pub mod embedder;
pub(crate) mod error;
pub mod fusion;
pub mod index;
pub(crate) mod metrics;
pub(crate) mod paths;
pub(crate) mod persist;
pub(crate) mod service;
pub(crate) mod setup;
pub(crate) mod sparse;
pub(crate) mod splitter;
pub mod types;
pub(crate) mod wal;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod testing;

pub(crate) use service::RagService;
pub(crate) use setup::{persist_on_shutdown, start, RagArgs};
