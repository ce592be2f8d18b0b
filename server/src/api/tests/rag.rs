//! The KAITO routes over HTTP (in-process), with the test embedder.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{router, test_state};

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn app(dir: &std::path::Path) -> axum::Router {
    let state = test_state(64).with_rag(crate::rag::testing::service(dir));
    router(state)
}

#[tokio::test]
async fn every_route_answers_in_kaitos_shape() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let (s, v) = call(
        &app,
        "POST",
        "/index",
        Some(json!({"index_name": "docs", "documents": [
            {"text": "The zebra lives in Africa.", "metadata": {"kind": "animal"}},
            {"text": "Paris is the capital of France.", "metadata": {"kind": "city"}}
        ]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    let zebra = v[0]["doc_id"].as_str().unwrap().to_string();
    assert_eq!(call(&app, "GET", "/indexes", None).await.1, json!(["docs"]));
    let (s, v) = call(
        &app,
        "GET",
        "/indexes/docs/documents?limit=1&max_text_length=5",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["count"].clone(), v["total_items"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(v["documents"][0]["text"], "The z");
    assert_eq!(v["documents"][0]["is_truncated"], true);
    let filter = "%7B%22kind%22%3A%22city%22%7D";
    let (_, v) = call(
        &app,
        "GET",
        &format!("/indexes/docs/documents?metadata_filter={filter}"),
        None,
    )
    .await;
    assert_eq!(v["total_items"], 1);
    assert_eq!(
        call(&app, "GET", "/indexes/docs/documents?limit=101", None)
            .await
            .0,
        422
    );
    assert_eq!(
        call(
            &app,
            "GET",
            "/indexes/docs/documents?metadata_filter=%7Bx",
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(&app, "GET", "/indexes/none/documents", None).await.0,
        404
    );
    let (s, v) = call(
        &app,
        "POST",
        "/retrieve",
        Some(json!({"index_name": "docs", "query": "zebra Africa"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["doc_id"], zebra.as_str());
    for key in [
        "node_id",
        "text",
        "score",
        "dense_score",
        "sparse_score",
        "source",
        "metadata",
    ] {
        assert!(v["results"][0].get(key).is_some(), "{key} in {v}");
    }
    let (_, v) = call(
        &app,
        "POST",
        "/retrieve",
        Some(json!({"index_name": "docs", "query": "zebra", "metadata_filter": {"kind": "city"}})),
    )
    .await;
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["metadata"]["kind"] == "city"));
    let (s, v) = call(
        &app,
        "POST",
        "/retrieve",
        Some(json!({"index_name": "docs", "query": "q", "max_node_count": 301})),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "max_node_count"]));
    assert_eq!(
        call(
            &app,
            "POST",
            "/retrieve",
            Some(json!({"index_name": "docs", "query": ""}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(
            &app,
            "POST",
            "/retrieve",
            Some(json!({"index_name": "nope", "query": "q"}))
        )
        .await
        .0,
        404
    );
    let (s, v) = call(
        &app,
        "POST",
        "/indexes/docs/documents",
        Some(json!({"documents": [
        {"doc_id": zebra, "text": "The zebra lives in Kenya.", "metadata": {"kind": "animal"}}]})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["updated_documents"][0]["doc_id"], zebra.as_str());
    let (s, v) = call(&app, "POST", "/persist/docs", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("Successfully persisted index docs"));
    assert_eq!(
        call(&app, "POST", "/persist/docs?path=..%2Fout", None)
            .await
            .0,
        400
    );
    assert_eq!(call(&app, "POST", "/load/docs", None).await.0, 409);
    assert_eq!(
        call(&app, "POST", "/load/docs?overwrite=true", None)
            .await
            .0,
        200
    );
    let (s, v) = call(
        &app,
        "POST",
        "/indexes/docs/documents/delete",
        Some(json!({"doc_ids": [zebra, "x"]})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["not_found_doc_ids"], json!(["x"]));
    assert_eq!(call(&app, "DELETE", "/indexes/docs", None).await.0, 200);
    let (s, v) = call(&app, "DELETE", "/indexes/docs", None).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::NOT_FOUND,
            json!({"detail": "No such index: 'docs' exists."})
        )
    );
    assert_eq!(
        call(
            &app,
            "POST",
            "/index",
            Some(json!({"index_name": "a/b", "documents": []}))
        )
        .await
        .0,
        400,
        "names become directory names"
    );
    assert_eq!(
        call(
            &app,
            "POST",
            "/index",
            Some(json!({"index_name": "a.b", "documents": []}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(&app, "POST", "/index", Some(json!({"documents": []})))
            .await
            .0,
        422
    );
    let (s, v) = call(&app, "GET", "/health", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "Healthy"})));
    let (_, text) = {
        let req = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        ((), String::from_utf8(b.to_vec()).unwrap())
    };
    assert!(
        text.contains("rag_index_requests_total{status=\"success\"}"),
        "{text}"
    );
    assert!(text.contains("vllm:num_requests_running"));
}

fn sse_events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn chat_with_index_name_carries_source_nodes_streamed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let state = test_state(4096).with_rag(crate::rag::testing::service(dir.path()));
    let app = router(state);
    let docs =
        json!({"index_name": "kb", "documents": [{"text": "zebras have black and white stripes"}]});
    assert_eq!(call(&app, "POST", "/index", Some(docs)).await.0, 200);
    let body = json!({"model": "m", "max_tokens": 64, "index_name": "kb",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "zebra stripes"}]});
    let (s, v) = call(&app, "POST", "/v1/chat/completions", Some(body.clone())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["source_nodes"][0]["text"],
        "zebras have black and white stripes"
    );
    // Streamed: the sources ride on the first chunk only.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(streamed.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let events = sse_events(std::str::from_utf8(&bytes).unwrap());
    assert_eq!(
        events[0]["source_nodes"][0]["doc_id"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(events[1..].iter().all(|e| e.get("source_nodes").is_none()));
    // Without index_name: the plain endpoint, no source_nodes key at all.
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("index_name");
    let (_, v) = call(&app, "POST", "/v1/chat/completions", Some(plain)).await;
    assert!(v.get("source_nodes").is_none(), "{v}");
    // Nothing similar enough: plain completion, source_nodes null.
    let mut far = body.clone();
    far["messages"][1]["content"] = json!("qqq");
    let (s, v) = call(&app, "POST", "/v1/chat/completions", Some(far)).await;
    assert_eq!(s, 200);
    assert!(
        v["source_nodes"].is_null() && v.get("source_nodes").is_some(),
        "{v}"
    );
    // KAITO's refusals.
    for (patch, status) in [
        (json!({"index_name": "none"}), 404),
        (json!({"context_token_ratio": 0.9}), 400),
        (json!({"functions": [{"name": "f"}]}), 400),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            400,
        ),
    ] {
        let mut b = body.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        assert_eq!(
            call(&app, "POST", "/v1/chat/completions", Some(b)).await.0,
            status,
            "{patch}"
        );
    }
}
