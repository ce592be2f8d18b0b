//! The OpenAI-compatible HTTP API, shaped as vLLM's OpenAI server: one file
//! per route family, handlers thin. Generation goes through a [`Backend`]
//! (the colocated engine now, the P/D router later), so the handlers,
//! validation, SSE framing, auth and metrics here serve both.

pub mod auth;
pub mod backend;
pub mod blocking;
pub mod chat;
pub mod chat_template;
pub mod completions;
pub mod embeddings;
pub mod errors;
pub mod generate;
pub mod guided;
pub mod health;
pub mod json;
pub mod logprobs;
pub mod metrics;
pub mod models;
pub mod rag_chat;
pub mod rag_errors;
pub mod rag_routes;
pub mod sse;
pub mod tokenize;
pub mod tool_parser;
pub mod tools;
pub mod validation;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tandem_engine::generation_config::GenerationDefaults;
use tandem_engine::guided::GuidanceCompiler;
use tandem_engine::tokenizer::Tokenizer;
use tower_http::catch_panic::CatchPanicLayer;

pub use backend::Backend;
use chat_template::ChatTemplate;
use errors::ApiError;
use generate::Admission;
use metrics::Metrics;
use validation::Limits;

use crate::rag::embedder::Embedder;

/// What the API knows about the one model it serves.
pub struct ModelInfo {
    /// `--served-model-name`s; the first is the one responses report.
    pub names: Vec<String>,
    /// The model directory (`root` in `/v1/models`).
    pub root: String,
    pub created: u64,
    pub max_model_len: usize,
    pub vocab_size: usize,
    pub tokenizer: Arc<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
    pub defaults: GenerationDefaults,
    /// Compiles structured-output constraints against the vocabulary (the
    /// engine's own compiler where the engine is in this process).
    pub guidance: Arc<GuidanceCompiler>,
    /// How the model writes tool calls (`--tool-call-parser`).
    pub tool_call_format: tool_parser::ToolCallFormat,
}

impl ModelInfo {
    pub fn name(&self) -> &str {
        &self.names[0]
    }

    pub fn limits(&self) -> Limits<'_> {
        Limits {
            max_model_len: self.max_model_len,
            vocab_size: self.vocab_size,
            defaults: &self.defaults,
        }
    }

    /// A request's `model` must be one of the served names (or absent).
    pub fn check_name(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested {
            Some(m) if !self.names.iter().any(|n| n == m) => Err(ApiError::unknown_model(m)),
            _ => Ok(()),
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub model: Arc<ModelInfo>,
    pub backend: Arc<dyn Backend>,
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
    pub api_key: Option<Arc<str>>,
    /// The RAG module (KAITO RAGEngine routes, chat with `index_name`).
    pub rag: Option<Arc<crate::rag::RagService>>,
    /// The RAG embedder; None serves no embeddings (see `with_embedder`).
    pub embedder: Option<Arc<dyn Embedder>>,
    /// Largest request body accepted, in bytes (`--max-request-body`).
    pub max_body_bytes: usize,
    /// Log prompts and completions (`--log-prompts`); off, no text is.
    pub log_prompts: bool,
}

/// Default `--max-request-body`: room for a full 128k-token prompt as
/// token ids, or a RAG batch of large documents.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;

impl AppState {
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn new(
        model: ModelInfo,
        backend: Arc<dyn Backend>,
        max_waiting: usize,
        api_key: Option<String>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new(model.name()));
        Self::with_metrics(model, metrics, backend, max_waiting, api_key)
    }

    /// As `new`, with a registry the backend already registered series in.
    pub fn with_metrics(
        model: ModelInfo,
        metrics: Arc<Metrics>,
        backend: Arc<dyn Backend>,
        max_waiting: usize,
        api_key: Option<String>,
    ) -> Self {
        AppState {
            metrics,
            model: Arc::new(model),
            backend,
            admission: Admission::new(max_waiting),
            api_key: api_key.map(Arc::from),
            rag: None,
            embedder: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            log_prompts: false,
        }
    }

    /// Serves `/v1/embeddings` (and RAG) with `embedder`.
    pub fn with_embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    pub fn with_rag(mut self, rag: Arc<crate::rag::RagService>) -> Self {
        self.rag = Some(rag);
        self
    }
}

/// `id`, `created` and `model` of one response and all its chunks.
#[derive(Clone, Debug)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ResponseMeta {
    pub fn new(prefix: &str, model: &str) -> Self {
        ResponseMeta {
            id: format!("{prefix}-{:032x}", rand::random::<u128>()),
            created: unix_now(),
            model: model.to_string(),
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// `stream_options` only makes sense with `stream: true` (as vLLM says).
pub fn check_stream_options(
    stream: Option<bool>,
    options: &Option<StreamOptions>,
) -> Result<(), ApiError> {
    if options.is_some() && stream != Some(true) {
        return Err(ApiError::invalid(
            "stream_options",
            "stream_options can only be set when stream is true",
        ));
    }
    Ok(())
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::unknown_route(method.as_str(), uri.path())
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a request handler panicked").into_response()
}

/// Every route, with auth in front and panics turned into plain 500s.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*model}", get(models::retrieve))
        .route("/v1/completions", post(completions::create))
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/health", get(health::health))
        .route("/version", get(health::version))
        .route("/metrics", get(health::metrics))
        .merge(rag_routes::routes(&state))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::Extension(json::BodyLimit(state.max_body_bytes)))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}
