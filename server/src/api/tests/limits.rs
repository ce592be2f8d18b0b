//! Every limit a request can breach is a 400 (413 for the body) naming the
//! limit and the value sent.

use axum::http::StatusCode;
use serde_json::json;

use super::*;

fn small_body_app(max_body_bytes: usize) -> axum::Router {
    let (mut state, _) = state(Mode::Script, 16, None, 64);
    state.max_body_bytes = max_body_bytes;
    router(state)
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_naming_it() {
    let app = small_body_app(1000);
    let body = json!({"model": "m", "prompt": "x".repeat(2000)});
    let e = error_of(
        send(&app, "POST", "/v1/completions", Some(body), None).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("1000 bytes") && message.contains("--max-request-body"),
        "{message}"
    );
    let ok = json!({"model": "m", "prompt": "x", "max_tokens": 2});
    assert_eq!(
        send(&app, "POST", "/v1/completions", Some(ok), None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn counts_and_lengths_are_capped_with_the_field_named() {
    let (app, _) = app(Mode::Script, 16, None);
    let many: Vec<_> = (0..=crate::api::chat_template::MAX_MESSAGES)
        .map(|_| json!({"role": "user", "content": "hi"}))
        .collect();
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": many}),
            "messages",
            "4096",
        ),
        (
            "/v1/completions",
            json!({"model": "m", "prompt": "a", "stop": ["x".repeat(1025)]}),
            "stop",
            "1024",
        ),
        (
            "/v1/completions",
            json!({"model": "m", "prompt": "a", "n": 129}),
            "n",
            "128",
        ),
        (
            "/v1/completions",
            json!({"model": "m", "prompt": "a", "logprobs": 21}),
            "logprobs",
            "20",
        ),
        (
            "/v1/completions",
            json!({"model": "m", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
            "4",
        ),
        (
            "/v1/completions",
            json!({"model": "m", "prompt": "a", "max_tokens": 100000}),
            "max_tokens",
            "64",
        ),
    ];
    for (path, body, param, limit) in cases {
        let e = error_of(
            send(&app, "POST", path, Some(body), None).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(e["param"], param, "{e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(limit), "{param}: {message}");
    }
}

#[tokio::test]
async fn rag_batches_and_documents_are_capped_with_the_limit_named() {
    use crate::api::rag_routes::{MAX_DOCUMENTS_PER_REQUEST, MAX_DOCUMENT_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let mut state = test_state(64).with_rag(crate::rag::testing::service(dir.path()));
    state.max_body_bytes = 64 << 20;
    let app = router(state);
    let many: Vec<_> = (0..=MAX_DOCUMENTS_PER_REQUEST)
        .map(|i| json!({"text": format!("doc {i}")}))
        .collect();
    let huge = json!([{"text": "x".repeat(MAX_DOCUMENT_BYTES + 1)}]);
    for (path, body, limit) in [
        (
            "/index",
            json!({"index_name": "kb", "documents": many}),
            "1000",
        ),
        (
            "/index",
            json!({"index_name": "kb", "documents": huge}),
            "4194304",
        ),
        (
            "/indexes/kb/documents",
            json!({"documents": huge}),
            "4194304",
        ),
    ] {
        let resp = send(&app, "POST", path, Some(body), None).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let v: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(limit), "{detail}");
    }
}
