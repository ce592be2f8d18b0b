//! How `tandem serve` turns RAG on: its flags, starting the service over
//! the server's embedder, and the shutdown hook (KAITO's poststart /
//! prestop hooks).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::dense;
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
    /// HNSW search beam: candidates a dense search keeps while walking the
    /// graph (at least the top k asked for). Higher finds more of the true
    /// nearest chunks and is slower; the default reaches recall@10 >= 0.95
    /// at 100k chunks (docs/rag.md).
    #[arg(long, default_value_t = dense::DEFAULT_EF_SEARCH as u64,
          value_parser = clap::value_parser!(u64).range(
              *dense::EF_SEARCH_RANGE.start() as u64..=*dense::EF_SEARCH_RANGE.end() as u64))]
    pub rag_ef_search: u64,
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
    dense::set_default_ef_search(args.rag_ef_search as usize);
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::RagArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        rag: RagArgs,
    }

    #[test]
    fn ef_search_defaults_and_refuses_out_of_range_naming_the_flag() {
        let cli = Cli::try_parse_from(["t"]).unwrap();
        assert_eq!(
            cli.rag.rag_ef_search as usize,
            super::dense::DEFAULT_EF_SEARCH
        );
        let cli = Cli::try_parse_from(["t", "--rag-ef-search", "200"]).unwrap();
        assert_eq!(cli.rag.rag_ef_search, 200);
        for bad in ["0", "4097", "x"] {
            let err = Cli::try_parse_from(["t", "--rag-ef-search", bad])
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains("--rag-ef-search"), "{err}");
        }
        let err = Cli::try_parse_from(["t", "--rag-ef-search", "0"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("1..=4096"), "{err}");
    }
}
