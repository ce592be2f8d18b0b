//! `GET /health`, `GET /version` and `GET /metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::AppState;

/// 200 with KAITO RAGEngine's `{"status": "Healthy"}` while the engine
/// runs (vLLM's probes only read the status); 503 once it cannot generate,
/// so orchestrators restart the worker.
pub async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.backend.is_healthy() {
        Ok(Json(json!({ "status": "Healthy" })))
    } else {
        Err(ApiError::engine_dead())
    }
}

pub async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state
        .metrics
        .render(&state.backend.stats(), state.admission.pending());
    if let Some(rag) = &state.rag {
        text.push_str(&rag.metrics.render());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
