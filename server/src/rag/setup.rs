//! How `tandem serve` turns RAG on: its flags, starting the service over
//! the server's embedder, and the shutdown hook (KAITO's poststart /
//! prestop hooks).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::embedder::Embedder;
use super::service::{ChatSettings, PromptOrder, RagService};

/// KAITO's `RAG_SIMILARITY_THRESHOLD` is 0.85 on squared L2 distance of
/// unit vectors, i.e. cosine ≥ 1 − 0.85 / 2.
pub const DEFAULT_MIN_SIMILARITY: f32 = 0.575;

#[derive(clap::Args, Debug, Clone)]
pub struct RagArgs {
    /// Turn the RAG module (KAITO RAGEngine API, chat with index_name) off.
    #[arg(long)]
    pub no_rag: bool,
    /// Where indexes are persisted; every persist/load path must be inside it.
    #[arg(long, default_value = "rag-storage")]
    pub rag_storage_dir: PathBuf,
    /// Load every index under --rag-storage-dir at start (they are always
    /// persisted there on SIGTERM).
    #[arg(long)]
    pub rag_load_on_start: bool,
    /// Log every index write to `<storage dir>/<name>.wal` and fsync it
    /// before answering, so acknowledged writes survive a crash (false:
    /// writes reach disk only on /persist and at shutdown).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub rag_wal: bool,
    /// Chunks less cosine-similar to the question are left out of RAG chats.
    #[arg(long, default_value_t = DEFAULT_MIN_SIMILARITY)]
    pub rag_min_similarity: f32,
    /// Where chunks go in RAG chat prompts (kaito: only to measure).
    #[arg(long, value_enum, default_value = "stable", hide = true)]
    pub rag_prompt_order: PromptOrder,
}

/// The RAG service over `embedder`, with the stored indexes loaded if
/// asked. `None` with `--no-rag`, or without an embedder (the embedder's
/// start-up said why).
pub fn start(
    embedder: Option<Arc<dyn Embedder>>,
    args: &RagArgs,
) -> anyhow::Result<Option<Arc<RagService>>> {
    if args.no_rag {
        return Ok(None);
    }
    let Some(embedder) = embedder else {
        tracing::warn!("RAG is off: there is no embedding model (see --embedding-model)");
        return Ok(None);
    };
    let chat = ChatSettings {
        prompt_order: args.rag_prompt_order,
        min_similarity: args.rag_min_similarity,
    };
    let rag = Arc::new(
        RagService::new(embedder, args.rag_storage_dir.clone(), chat).with_wal(args.rag_wal),
    );
    if args.rag_load_on_start {
        let n = rag.load_all().context("loading the stored RAG indexes")?;
        tracing::info!(indexes = n, dir = %args.rag_storage_dir.display(), "loaded RAG indexes");
    }
    Ok(Some(rag))
}

/// SIGTERM: persist every index under --rag-storage-dir (blocking).
pub fn persist_on_shutdown(rag: Option<&Arc<RagService>>) {
    if let Some(rag) = rag {
        let n = rag.persist_all();
        tracing::info!(indexes = n, dir = %rag.storage_root().display(), "persisted RAG indexes");
    }
}
