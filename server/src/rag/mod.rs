//! The bundled RAG module (KAITO RAGEngine-compatible): the embedder that
//! turns text into vectors and the splitter that cuts documents into chunks.
//! Index storage and retrieval live beside them.

pub mod embedder;
// Its caller, the index (document ingestion), lands on the rag-index branch.
#[allow(dead_code)]
pub mod splitter;
