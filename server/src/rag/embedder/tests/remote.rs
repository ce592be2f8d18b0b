//! The remote embedders against stand-in services on 127.0.0.1.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::super::remote_openai::endpoint;
use super::super::*;

/// One request a stand-in saw: its body and Authorization header.
type Request = (Value, Option<String>);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn auth(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .map(|h| h.to_str().unwrap().to_string())
}

/// KAITO's contract: {"inputs": text} -> [floats]; "nested" answers [[floats]] as TEI does.
async fn kaito(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    seen.0.lock().push((body.clone(), auth(&headers)));
    let text = body["inputs"].as_str().unwrap();
    let v = json!([text.len() as f32, 4.0, 0.0]);
    Json(if text.starts_with("nested") {
        json!([v])
    } else {
        v
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kaito_remote_embeds_each_text_with_the_token_and_normalizes() {
    let seen = Seen::default();
    let url = serve(
        Router::new()
            .route("/embed", post(kaito))
            .with_state(seen.clone()),
    )
    .await;
    let e = KaitoEmbedder::new(&format!("{url}/embed"), None, Some("s3cret".into())).unwrap();
    assert_eq!(e.dimension(), 3);
    let v = e
        .embed(vec!["abc".into(), "nested one".into(), "".into()])
        .await
        .unwrap();
    assert_eq!(v[0], vec![0.6, 0.8, 0.0]); // [3, 4, 0] normalized
    assert!((v[1][0] - 10.0 / 116f32.sqrt()).abs() < 1e-6);
    assert_eq!(v[2], vec![0.0, 1.0, 0.0]);
    let seen = seen.0.lock();
    assert_eq!(seen.len(), 4, "one probe, then one request per text");
    assert!(seen
        .iter()
        .all(|(_, a)| a.as_deref() == Some("Bearer s3cret")));
    assert_eq!(e.count_tokens("12345678"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kaito_remote_failures_are_remote_errors() {
    let app = Router::new().route(
        "/embed",
        post(|| async { (StatusCode::UNAUTHORIZED, "bad token") }),
    );
    let url = serve(app).await;
    let err = KaitoEmbedder::new(&format!("{url}/embed"), None, None)
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, EmbedError::Remote { .. }));
    assert!(msg.contains("401") && msg.contains("bad token"), "{msg}");
}

/// An OpenAI /v1/embeddings stand-in answering in reverse index order.
async fn openai(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    seen.0.lock().push((body.clone(), auth(&headers)));
    let inputs = body["input"].as_array().unwrap();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": [0.0, t.as_str().unwrap().len() as f32]}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"]}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_remote_sends_batches_and_restores_order() {
    let seen = Seen::default();
    let app = Router::new()
        .route("/v1/embeddings", post(openai))
        .with_state(seen.clone());
    let url = serve(app).await;
    let e = OpenAiEmbedder::new(&url, Some("text-embedding-3-small".into()), None).unwrap();
    assert_eq!(
        (e.dimension(), e.model_name()),
        (2, "text-embedding-3-small")
    );
    let v = e.embed(vec!["a".into(), "bb".into()]).await.unwrap();
    assert_eq!(v, vec![vec![0.0, 1.0], vec![0.0, 1.0]]);
    let seen = seen.0.lock();
    assert_eq!(seen[1].0["input"], json!(["a", "bb"]));
    assert_eq!(seen[1].0["model"], json!("text-embedding-3-small"));
    assert_eq!(seen[1].1, None);
}

#[test]
fn openai_endpoint_accepts_full_base_or_host_urls() {
    assert_eq!(endpoint("http://h:1"), "http://h:1/v1/embeddings");
    assert_eq!(endpoint("http://h:1/v1/"), "http://h:1/v1/embeddings");
    assert_eq!(
        endpoint("http://h:1/v1/embeddings"),
        "http://h:1/v1/embeddings"
    );
}
