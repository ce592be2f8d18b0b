//! The router in process over a scripted backend: SSE framing, error
//! shapes (401/404/429/400/500), and that dropping a response aborts its
//! sequences. The real engine is exercised by the Python suite.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tandem_engine::tokenizer::Tokenizer;
use tower::ServiceExt;

use super::testing::{state, text, Fake, Mode};
use super::{router, AppState};

mod embeddings;
mod errors;
mod fuzz;
mod limits;
mod rag;
mod streaming;
mod tokenizing;

fn app(mode: Mode, max_waiting: usize, api_key: Option<&str>) -> (axum::Router, Arc<AtomicUsize>) {
    let (state, dropped) = state(mode, max_waiting, api_key, 64);
    (router(state), dropped)
}

/// A scripted-backend state with `max_model_len` (the RAG tests add RAG).
fn test_state(max_model_len: usize) -> AppState {
    state(Mode::Script, 16, None, max_model_len).0
}

async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> Response {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
    app.clone().oneshot(req.body(body).unwrap()).await.unwrap()
}

/// Checks the OpenAI error shape and returns the error object.
async fn error_of(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    let body: Value = serde_json::from_str(&text(resp).await).unwrap();
    let e = body["error"].clone();
    for field in ["message", "type", "param", "code"] {
        assert!(e.get(field).is_some(), "error object lacks {field}: {body}");
    }
    e
}

/// Splits an SSE body into its `data:` payloads, checking the framing.
fn sse_payloads(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "{body:?}");
    body.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("every event is one data line")
                .to_string()
        })
        .collect()
}
