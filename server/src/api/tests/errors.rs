//! 401/404/429/400/500 as OpenAI error objects; dropping a response aborts.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

#[tokio::test]
async fn api_key_guards_v1_only() {
    let (app, _) = app(Mode::Script, 16, Some("sesame"));
    let e = error_of(
        send(&app, "GET", "/v1/models", None, None).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(e["code"], "invalid_api_key");
    let e = error_of(
        send(&app, "GET", "/v1/models", None, Some("wrong")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(e["type"], "authentication_error");
    let ok = send(&app, "GET", "/v1/models", None, Some("sesame")).await;
    assert_eq!(ok.status(), 200);
    let models: Value = serde_json::from_str(&text(ok).await).unwrap();
    assert_eq!(models["data"][0]["id"], "m");
    assert_eq!(models["data"][0]["max_model_len"], 64);
    assert_eq!(send(&app, "GET", "/health", None, None).await.status(), 200);
    assert_eq!(
        send(&app, "GET", "/metrics", None, None).await.status(),
        200
    );
}

#[tokio::test]
async fn unknown_routes_and_models_are_404_error_objects() {
    let (app, _) = app(Mode::Script, 16, None);
    let e = error_of(
        send(&app, "GET", "/v1/nothing", None, None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(e["code"], "not_found");
    let body = json!({"model": "gpt-9", "prompt": "x"});
    let e = error_of(
        send(&app, "POST", "/v1/completions", Some(body), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(e["param"], "model");
    assert!(e["message"].as_str().unwrap().contains("gpt-9"));
    let e = error_of(
        send(&app, "GET", "/v1/models/gpt-9", None, None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(e["code"], "model_not_found");
    // Served names may hold slashes (`org/model`).
    let card = send(&app, "GET", "/v1/models/org/m", None, None).await;
    assert_eq!(card.status(), 200);
    let card: Value = serde_json::from_str(&text(card).await).unwrap();
    assert_eq!(card["id"], "org/m");
}

#[tokio::test]
async fn malformed_json_and_bad_fields_are_400() {
    let (app, _) = app(Mode::Script, 16, None);
    let req = Request::post("/v1/completions")
        .body(Body::from("{\"prompt\": "))
        .unwrap();
    let e = error_of(
        app.clone().oneshot(req).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("malformed JSON"));
    let body = json!({"prompt": "x", "max_tokens": 100});
    let e = error_of(
        send(&app, "POST", "/v1/completions", Some(body), None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e["param"], "max_tokens");
    assert!(e["message"].as_str().unwrap().contains("64"));
    let body = json!({"messages": [{"role": "user", "content": "x"}], "n": 0});
    let e = error_of(
        send(&app, "POST", "/v1/chat/completions", Some(body), None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e["param"], "n");
}

#[tokio::test]
async fn full_waiting_queue_is_429_with_retry_after_and_disconnect_aborts() {
    let (app, dropped) = app(Mode::Hang, 1, None);
    let body = json!({"prompt": "x", "max_tokens": 2, "stream": true});
    let first = send(&app, "POST", "/v1/completions", Some(body.clone()), None).await;
    assert_eq!(first.status(), 200);
    let second = send(&app, "POST", "/v1/completions", Some(body), None).await;
    assert_eq!(second.headers()[header::RETRY_AFTER], "1");
    let e = error_of(second, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    drop(first); // the client goes away
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "dropping the body aborts the sequence"
    );
    let metrics = text(send(&app, "GET", "/metrics", None, None).await).await;
    assert!(
        metrics
            .contains("vllm:request_success_total{model_name=\"m\",finished_reason=\"abort\"} 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("tandem_requests_rejected_total{model_name=\"m\",reason=\"overloaded\"} 1"));
    // The slot is free again.
    let body = json!({"prompt": "x", "max_tokens": 2, "stream": true});
    assert_eq!(
        send(&app, "POST", "/v1/completions", Some(body), None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn engine_failures_never_leak_internals() {
    let (app, _) = app(Mode::Fail, 16, None);
    let body = json!({"prompt": "x", "max_tokens": 4});
    let e = error_of(
        send(&app, "POST", "/v1/completions", Some(body), None).await,
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await;
    assert!(!e["message"].as_str().unwrap().contains("secret"));
    let body = json!({"prompt": "x", "max_tokens": 4, "stream": true});
    let events =
        sse_payloads(&text(send(&app, "POST", "/v1/completions", Some(body), None).await).await);
    assert_eq!(events.len(), 3, "token, error, [DONE]: {events:?}");
    let err: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    assert!(!events[1].contains("secret"));
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test]
async fn health_is_503_once_the_engine_is_gone() {
    let (ok, _) = app(Mode::Script, 16, None);
    assert_eq!(
        send(&ok, "GET", "/health", None, None).await.status(),
        StatusCode::OK
    );
    let (dead, _) = app(Mode::Fail, 16, None);
    error_of(
        send(&dead, "GET", "/health", None, None).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
}
