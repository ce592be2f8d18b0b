//! The router in process over a scripted backend: SSE framing, error
//! shapes (401/404/429/400/500), and that dropping a response aborts its
//! sequences. The real engine is exercised by the Python suite.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use futures::stream::{self, StreamExt};
use serde_json::Value;
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

mod embeddings;
mod errors;
mod fuzz;
mod limits;
mod rag;
mod streaming;
mod tokenizing;

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
        kv_handoff: None,
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

    /// The failing backend plays an engine whose thread died.
    fn is_healthy(&self) -> bool {
        self.mode != Mode::Fail
    }
}

pub(crate) fn tokenizer() -> Arc<Tokenizer> {
    let dir = tempfile::tempdir().unwrap();
    let info = write_demo_model(&dir.path().join("tiny"), DemoSize::Tiny, 0).unwrap();
    Arc::new(Tokenizer::load(&ModelFiles::locate(&info.dir).unwrap()).unwrap())
}

fn app(mode: Mode, max_waiting: usize, api_key: Option<&str>) -> (axum::Router, Arc<AtomicUsize>) {
    let (state, dropped) = state(mode, max_waiting, api_key, 64);
    (router(state), dropped)
}

/// A scripted-backend state with `max_model_len` (the RAG tests add RAG).
fn test_state(max_model_len: usize) -> AppState {
    state(Mode::Script, 16, None, max_model_len).0
}

fn state(
    mode: Mode,
    max_waiting: usize,
    api_key: Option<&str>,
    max_model_len: usize,
) -> (AppState, Arc<AtomicUsize>) {
    let tokenizer = tokenizer();
    let model = ModelInfo {
        names: vec!["m".into(), "alias".into(), "org/m".into()],
        root: "/models/m".into(),
        created: 1,
        max_model_len,
        vocab_size: tokenizer.vocab_size(),
        guidance: Arc::new(tandem_engine::guided::GuidanceCompiler::new(
            tokenizer.clone(),
            tokenizer.vocab_size(),
            &[0],
        )),
        tokenizer,
        chat_template: Some(ChatTemplate::new(CHAT_TEMPLATE.to_string()).unwrap()),
        defaults: GenerationDefaults::default(),
        tool_call_format: Default::default(),
    };
    let dropped = Arc::new(AtomicUsize::new(0));
    let backend = Arc::new(Fake {
        mode,
        dropped: dropped.clone(),
    });
    let state = AppState::new(model, backend, max_waiting, api_key.map(str::to_string));
    (state, dropped)
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
