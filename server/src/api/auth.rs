//! `--api-key` / `TANDEM_API_KEY`: every `/v1/...` route needs
//! `Authorization: Bearer <key>`, and so do the RAG index routes. Health, version, metrics and the
//! tokenizer routes stay open (as in vLLM), so probes and scrapers need no
//! secret.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use super::AppState;

pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let path = req.uri().path();
        if path.starts_with("/v1/") || path == "/v1" || super::rag_routes::is_rag_path(path) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| same_secret(g.trim(), key)) {
                return ApiError::unauthorized().into_response();
            }
        }
    }
    next.run(req).await
}

/// Whether `given` is the secret, in time independent of where they differ
/// and of their lengths: their SHA-256 digests are compared in full.
pub fn same_secret(given: &str, secret: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(secret.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_secret_compares_whole_strings() {
        assert!(super::same_secret("secret", "secret"));
        assert!(!super::same_secret("secret", "secreT"));
        assert!(!super::same_secret("secret", "secret2"));
        assert!(!super::same_secret("", "x"));
    }
}
