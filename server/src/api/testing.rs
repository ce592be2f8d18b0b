//! The API over a scripted backend, shared by the unit tests
//! (`api/tests`) and the fuzz entry points (`crate::fuzzing`): one fake
//! engine, one state builder, and the property every hostile request must
//! keep (a success or a client error, never a 5xx or a panic).
//!
//! Compiled for tests and under the `fuzzing` feature; the fuzz targets
//! use only part of it, so unused pieces are not warned about there.
#![cfg_attr(not(test), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
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
use super::{AppState, ModelInfo};

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// `max_tokens` tokens "t0 ", "t1 ", ..., then `length`.
    Script,
    /// Never produces anything.
    Hang,
    /// One token, then an engine failure.
    Fail,
}

pub(crate) struct Fake {
    pub(crate) mode: Mode,
    /// Sequence streams dropped (finished or aborted).
    pub(crate) dropped: Arc<AtomicUsize>,
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

/// The tiny demo model's tokenizer (written to a temporary directory and
/// loaded; the directory goes once it is in memory).
pub(crate) fn tokenizer() -> Arc<Tokenizer> {
    let dir = tempfile::tempdir().unwrap();
    let info = write_demo_model(&dir.path().join("tiny"), DemoSize::Tiny, 0).unwrap();
    Arc::new(Tokenizer::load(&ModelFiles::locate(&info.dir).unwrap()).unwrap())
}

/// The test model's metadata over the demo tokenizer, served under `names`.
pub(crate) fn model_info(
    names: &[&str],
    max_model_len: usize,
    chat_template: Option<ChatTemplate>,
) -> ModelInfo {
    let tokenizer = tokenizer();
    ModelInfo {
        names: names.iter().map(|n| n.to_string()).collect(),
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
        chat_template,
        defaults: GenerationDefaults::default(),
        tool_call_format: Default::default(),
    }
}

/// A state serving model "m" (aliases "alias", "org/m") with the demo
/// chat template over a [`Fake`] in `mode`; returns the fake's count of
/// dropped sequence streams too.
pub(crate) fn state(
    mode: Mode,
    max_waiting: usize,
    api_key: Option<&str>,
    max_model_len: usize,
) -> (AppState, Arc<AtomicUsize>) {
    let chat_template = Some(ChatTemplate::new(CHAT_TEMPLATE.to_string()).unwrap());
    let model = model_info(&["m", "alias", "org/m"], max_model_len, chat_template);
    let dropped = Arc::new(AtomicUsize::new(0));
    let backend = Arc::new(Fake {
        mode,
        dropped: dropped.clone(),
    });
    let state = AppState::new(model, backend, max_waiting, api_key.map(str::to_string));
    (state, dropped)
}

/// A response body as text.
pub(crate) async fn text(resp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Sends one request; the answer must be a success or a client error.
/// Returns the status and body.
pub(crate) async fn answer(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Body,
) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let text = text(resp).await;
    assert!(
        status.is_success() || status.is_client_error(),
        "{method} {path} answered {status}: {text}"
    );
    (status, text)
}

/// As [`answer`] (a POST), and an error is an OpenAI error object with a
/// message. Returns the status.
pub(crate) async fn check_openai_answer(app: &axum::Router, path: &str, body: Body) -> StatusCode {
    let (status, text) = answer(app, "POST", path, body).await;
    if status.is_client_error() {
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{status} without a message: {text}");
    }
    status
}

/// Every file under `dir`, depth first (a persisted index's files).
pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
