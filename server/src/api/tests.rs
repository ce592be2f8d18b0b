//! The router in process over a scripted backend: SSE framing, error
//! shapes (401/404/429/400/500), and that dropping a response aborts its
//! sequences. The real engine is exercised by the Python suite.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use tandem_engine::demo::{write_demo_model, DemoSize, CHAT_TEMPLATE};
use tandem_engine::engine_core::EngineStats;
use tandem_engine::generation_config::GenerationDefaults;
use tandem_engine::model_dir::ModelFiles;
use tandem_engine::sampler::SampledToken;
use tandem_engine::sequence::FinishReason;
use tandem_engine::serving::{RequestOutput, ServingError, ServingRequest, Timings, Usage};
use tandem_engine::tokenizer::Tokenizer;
use tower::ServiceExt;

use super::backend::{Backend, OutputStream};
use super::chat_template::ChatTemplate;
use super::{router, AppState, ModelInfo};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `max_tokens` tokens "t0 ", "t1 ", ..., then `length`.
    Script,
    /// Never produces anything.
    Hang,
    /// One token, then an engine failure.
    Fail,
}

struct Fake {
    mode: Mode,
    /// Sequence streams dropped (finished or aborted).
    dropped: Arc<AtomicUsize>,
}

struct DropGuard(Arc<AtomicUsize>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn output(i: usize, prompt: usize, last: bool) -> RequestOutput {
    RequestOutput {
        token_ids: vec![100 + i as u32],
        samples: vec![SampledToken {
            token: 100 + i as u32,
            logprob: -0.5,
            top_logprobs: vec![(100 + i as u32, -0.5), (7, -1.5)],
        }],
        text: format!("t{i} "),
        finish_reason: last.then_some(FinishReason::Length),
        stop_reason: None,
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: i + 1,
            cached_tokens: 0,
        },
        timings: last.then(Timings::default),
    }
}

impl Backend for Fake {
    fn generate(&self, req: ServingRequest) -> OutputStream {
        let guard = DropGuard(self.dropped.clone());
        let prompt = req.request.prompt_tokens.len();
        let n = req.request.stop.max_tokens;
        let items: Vec<Result<RequestOutput, ServingError>> = match self.mode {
            Mode::Script => (0..n).map(|i| Ok(output(i, prompt, i + 1 == n))).collect(),
            Mode::Fail => vec![
                Ok(output(0, prompt, false)),
                Err(ServingError::Engine("secret internal detail".into())),
            ],
            Mode::Hang => Vec::new(),
        };
        let hang = self.mode == Mode::Hang;
        stream::iter(items)
            .chain(stream::pending().take(usize::from(hang)))
            .map(move |item| {
                let _keep = &guard;
                item
            })
            .boxed()
    }

    fn stats(&self) -> EngineStats {
        EngineStats::default()
    }

    fn shutdown(&self) {}
}

fn tokenizer() -> Arc<Tokenizer> {
    let dir = tempfile::tempdir().unwrap();
    let info = write_demo_model(&dir.path().join("tiny"), DemoSize::Tiny, 0).unwrap();
    Arc::new(Tokenizer::load(&ModelFiles::locate(&info.dir).unwrap()).unwrap())
}

fn app(mode: Mode, max_waiting: usize, api_key: Option<&str>) -> (axum::Router, Arc<AtomicUsize>) {
    let tokenizer = tokenizer();
    let model = ModelInfo {
        names: vec!["m".into(), "alias".into(), "org/m".into()],
        root: "/models/m".into(),
        created: 1,
        max_model_len: 64,
        vocab_size: tokenizer.vocab_size(),
        tokenizer,
        chat_template: Some(ChatTemplate::new(CHAT_TEMPLATE.to_string()).unwrap()),
        defaults: GenerationDefaults::default(),
    };
    let dropped = Arc::new(AtomicUsize::new(0));
    let backend = Arc::new(Fake {
        mode,
        dropped: dropped.clone(),
    });
    let state = AppState::new(model, backend, max_waiting, api_key.map(str::to_string));
    (router(state), dropped)
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

async fn text(resp: Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
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

#[tokio::test]
async fn chat_stream_role_first_finish_last_usage_then_done() {
    let (app, _) = app(Mode::Script, 16, None);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3, "n": 2, "stream": true, "stream_options": {"include_usage": true}});
    let resp = send(&app, "POST", "/v1/chat/completions", Some(body), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let events = sse_payloads(&text(resp).await);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    assert!(chunks
        .iter()
        .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
    for (i, c) in chunks[..2].iter().enumerate() {
        assert_eq!(c["choices"][0]["index"], i);
        assert_eq!(
            c["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
    }
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert_eq!(
        usage["usage"]["total_tokens"],
        usage["usage"]["prompt_tokens"].as_u64().unwrap() + 6
    );
    for index in 0..2 {
        let mine: Vec<&Value> = chunks[2..chunks.len() - 1]
            .iter()
            .map(|c| &c["choices"][0])
            .filter(|c| c["index"] == index)
            .collect();
        let text: String = mine
            .iter()
            .map(|c| c["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, "t0 t1 t2 ");
        assert!(mine.iter().all(|c| c["delta"].get("role").is_none()));
        let (last, rest) = mine.split_last().unwrap();
        assert_eq!(last["finish_reason"], "length");
        assert!(rest.iter().all(|c| c["finish_reason"].is_null()));
    }
}

#[tokio::test]
async fn completion_stream_without_usage_ends_in_done() {
    let (app, _) = app(Mode::Script, 16, None);
    let body = json!({"prompt": ["a", "b"], "max_tokens": 2, "stream": true, "echo": true});
    let events =
        sse_payloads(&text(send(&app, "POST", "/v1/completions", Some(body), None).await).await);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks.len(),
        4,
        "two tokens for each of two prompts, no usage chunk"
    );
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "text_completion" && c.get("usage").is_none()));
    let first_of = |i: usize| {
        chunks
            .iter()
            .find(|c| c["choices"][0]["index"] == i)
            .unwrap()
    };
    assert_eq!(
        first_of(0)["choices"][0]["text"],
        "at0 ",
        "echo prepends the prompt"
    );
    assert_eq!(first_of(1)["choices"][0]["text"], "bt0 ");
}

#[tokio::test]
async fn completion_response_shape() {
    let (app, _) = app(Mode::Script, 16, None);
    let body = json!({"model": "alias", "prompt": "x", "max_tokens": 2, "logprobs": 1});
    let resp = send(&app, "POST", "/v1/completions", Some(body), None).await;
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "m", "responses report the first served name");
    let c = &v["choices"][0];
    assert_eq!(c["text"], "t0 t1 ");
    assert_eq!(c["finish_reason"], "length");
    assert!(c["stop_reason"].is_null());
    let lp = &c["logprobs"];
    assert_eq!(lp["token_logprobs"], json!([-0.5, -0.5]));
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 2);
    assert_eq!(lp["text_offset"][0], 0);
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

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
