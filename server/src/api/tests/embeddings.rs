//! `POST /v1/embeddings` over a deterministic stand-in embedder: response
//! shape, float and base64 encodings, usage, and the 400/404 answers.

use base64::Engine as _;
use futures::future::{BoxFuture, FutureExt};
use serde_json::json;

use super::*;
use crate::rag::embedder::{EmbedError, Embedder};

/// Vector of a text: [len, 1] normalized; 3 tokens per word.
struct Stub;

impl Embedder for Stub {
    fn model_name(&self) -> &str {
        "org/stub-embedder"
    }
    fn dimension(&self) -> usize {
        2
    }
    fn max_seq_length(&self) -> usize {
        4
    }
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        let out = texts
            .iter()
            .map(|t| {
                let (a, b) = (t.len() as f32, 1.0f32);
                let n = (a * a + b * b).sqrt();
                vec![a / n, b / n]
            })
            .collect();
        futures::future::ready(Ok(out)).boxed()
    }
    fn count_tokens(&self, text: &str) -> usize {
        3 * text.split_whitespace().count()
    }
}

fn app_with(embedder: Option<Arc<dyn Embedder>>) -> axum::Router {
    let model = crate::api::testing::model_info(&["m"], 64, None);
    let backend = Arc::new(Fake {
        mode: Mode::Script,
        dropped: Arc::new(AtomicUsize::new(0)),
    });
    let state = AppState::new(model, backend, 8, None);
    router(match embedder {
        Some(e) => state.with_embedder(e),
        None => state,
    })
}

async fn post_json(app: &axum::Router, body: Value) -> Response {
    send(app, "POST", "/v1/embeddings", Some(body), None).await
}

#[tokio::test]
async fn floats_for_a_list_with_usage_and_order() {
    let app = app_with(Some(Arc::new(Stub)));
    let resp = post_json(
        &app,
        json!({"input": ["abc", "one two three"], "model": "org/stub-embedder"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "org/stub-embedder");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
    }
    let v0: Vec<f32> = serde_json::from_value(data[0]["embedding"].clone()).unwrap();
    assert!((v0[0] - 3.0 / 10f32.sqrt()).abs() < 1e-6);
    // 3 tokens, then 9 capped at max_seq_length 4.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 7, "total_tokens": 7})
    );
}

#[tokio::test]
async fn base64_is_little_endian_f32_and_a_string_input_works() {
    let app = app_with(Some(Arc::new(Stub)));
    // The short name (after the org) is accepted too.
    let resp = post_json(
        &app,
        json!({"input": "abc", "model": "stub-embedder", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = serde_json::from_str(&text(resp).await).unwrap();
    let b64 = body["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let v: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        v,
        Stub.embed(vec!["abc".into()])
            .now_or_never()
            .unwrap()
            .unwrap()[0]
    );
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let app = app_with(Some(Arc::new(Stub)));
    let cases = [
        (json!({"input": []}), "input"),
        (json!({"input": ["ok", ""]}), "input[1]"),
        (json!({"input": [1, 2, 3]}), "input"),
        (json!({"input": "x", "dimensions": 8}), "dimensions"),
        (
            json!({"input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
    ];
    for (body, param) in cases {
        let e = error_of(post_json(&app, body.clone()).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(e["param"], param, "{body}: {e}");
    }
    let e = error_of(
        post_json(&app, json!({"input": "x", "model": "other"})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(
        e["message"].as_str().unwrap().contains("org/stub-embedder"),
        "{e}"
    );
}

#[tokio::test]
async fn without_an_embedder_the_answer_says_how_to_enable_it() {
    let app = app_with(None);
    let e = error_of(
        post_json(&app, json!({"input": "x"})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(e["code"], "embeddings_disabled");
    assert!(
        e["message"].as_str().unwrap().contains("--embedding-model"),
        "{e}"
    );
}
