//! `/internal/*`: the routes the router drives. Streams are NDJSON; an
//! error after the stream started arrives as an `error` line.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use tandem_engine::sequence::KvHandoff;
use tandem_engine::serving::{KvSnapshot, RequestOutput, ServingError, ServingRequest};

use super::wire::{
    DecodeRequest, KvEventLine, PrefillResponse, ReleaseRequest, StreamLine, TokenOutput,
    WireError, WorkerStatus, TOKEN_HEADER,
};
use super::{Role, WorkerState};
use crate::api::Backend;

pub fn routes(state: WorkerState) -> Router {
    Router::new()
        .route("/internal/generate", post(generate))
        .route("/internal/prefill", post(prefill))
        .route("/internal/decode", post(decode))
        .route("/internal/release", post(release))
        .route("/internal/kv-events", get(kv_events))
        .route("/internal/status", get(status))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

async fn require_token(
    State(state): State<WorkerState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
        if !given.is_some_and(|g| crate::api::auth::same_secret(g, token)) {
            return error(
                StatusCode::UNAUTHORIZED,
                &ServingError::Rejected(format!(
                    "missing or wrong {TOKEN_HEADER}: the router and its workers must share --internal-token"
                )),
            );
        }
    }
    next.run(req).await
}

fn error(status: StatusCode, e: &ServingError) -> Response {
    (status, Json(WireError::from(e))).into_response()
}

/// A JSON body whose rejection is a 400 [`WireError`] like every other
/// refusal here (axum's own is a plain-text 422 the router cannot read).
struct WireJson<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for WireJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(body)) => Ok(WireJson(body)),
            Err(rejection) => Err(error(
                StatusCode::BAD_REQUEST,
                &ServingError::Rejected(format!(
                    "invalid internal request body: {}",
                    rejection.body_text()
                )),
            )),
        }
    }
}

fn status_of(e: &ServingError) -> StatusCode {
    match e {
        ServingError::Rejected(_) => StatusCode::BAD_REQUEST,
        ServingError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ServingError::Shutdown | ServingError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn ndjson<S, T>(lines: S) -> Response
where
    S: Stream<Item = T> + Send + 'static,
    T: serde::Serialize,
{
    let body = lines.map(|line| {
        let mut bytes = serde_json::to_vec(&line).expect("wire types serialize");
        bytes.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(bytes))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Token updates of one engine request, ending after its last.
fn token_lines(
    stream: impl Stream<Item = Result<RequestOutput, ServingError>> + Send + 'static,
) -> impl Stream<Item = StreamLine> + Send + 'static {
    stream.map(|item| match item {
        Ok(out) => StreamLine::Output(TokenOutput::from(&out)),
        Err(e) => StreamLine::Error(WireError::from(&e)),
    })
}

/// A whole request here (colocated workers, and decode workers computing
/// a prompt themselves when no prefill worker could).
async fn generate(
    State(state): State<WorkerState>,
    WireJson(req): WireJson<ServingRequest>,
) -> Response {
    if let Err(refused) = precompile_guide(&state, &req).await {
        return refused;
    }
    state.requests.generate.increment(1);
    ndjson(token_lines(Backend::generate(&state.engine, req)))
}

/// Compiles the request's structured-output constraint on the blocking
/// pool, so the engine thread's compile is a cache hit; a constraint that
/// does not compile is refused here.
async fn precompile_guide(state: &WorkerState, req: &ServingRequest) -> Result<(), Response> {
    let Some(spec) = req.request.params.guided.clone() else {
        return Ok(());
    };
    let compiler = state.engine.guidance().clone();
    match tokio::task::spawn_blocking(move || compiler.compile(&spec).map(drop)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            &ServingError::Rejected(e.to_string()),
        )),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &ServingError::Rejected(format!("compiling the request's grammar failed: {e}")),
        )),
    }
}

/// Computes the prompt, samples the first token, holds the KV.
async fn prefill(
    State(state): State<WorkerState>,
    WireJson(mut req): WireJson<ServingRequest>,
) -> Response {
    let Some(agent) = state.agent_metadata.clone() else {
        return error(
            StatusCode::BAD_REQUEST,
            &ServingError::Rejected(format!(
                "this is a {} worker; prefill needs `--role prefill`",
                state.role.name()
            )),
        );
    };
    req.request.handoff = KvHandoff::Hold;
    if let Err(refused) = precompile_guide(&state, &req).await {
        return refused;
    }
    state.requests.prefill.increment(1);
    let mut stream = state.engine.add_request(req);
    let mut first = match stream.next().await {
        Some(Ok(out)) => out,
        Some(Err(e)) => return error(status_of(&e), &e),
        None => return error(StatusCode::SERVICE_UNAVAILABLE, &ServingError::Shutdown),
    };
    let kv = first.kv_handoff.take().map(|mut handle| {
        state.leases.hold(handle.lease);
        handle.agent = agent;
        handle
    });
    Json(PrefillResponse {
        output: TokenOutput::from(&first),
        kv,
    })
    .into_response()
}

/// Pulls the prompt KV a prefill worker holds, then decodes.
async fn decode(
    State(state): State<WorkerState>,
    WireJson(req): WireJson<DecodeRequest>,
) -> Response {
    if state.role == Role::Prefill {
        return error(
            StatusCode::BAD_REQUEST,
            &ServingError::Rejected(
                "this is a prefill worker; decode needs `--role decode`".into(),
            ),
        );
    }
    let mut request = req.request;
    request.request.handoff = KvHandoff::Load {
        output_tokens: req.output_tokens,
        remote: req.kv,
    };
    if let Err(refused) = precompile_guide(&state, &request).await {
        return refused;
    }
    state.requests.decode.increment(1);
    ndjson(token_lines(Backend::generate(&state.engine, request)))
}

async fn release(
    State(state): State<WorkerState>,
    WireJson(req): WireJson<ReleaseRequest>,
) -> StatusCode {
    state.leases.release(req.lease);
    StatusCode::NO_CONTENT
}

/// A snapshot of the prefix cache, then every change, until the engine
/// stops or this reader falls too far behind (it then reconnects and gets
/// a fresh snapshot).
async fn kv_events(State(state): State<WorkerState>) -> Response {
    let Some(KvSnapshot { hashes, events }) = state.engine.kv_snapshot().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, &ServingError::Shutdown);
    };
    let first = futures::stream::once(async move { KvEventLine::Snapshot { hashes } });
    let rest = futures::stream::unfold(events, |mut rx| async move {
        match rx.recv().await {
            Ok(event) => Some((KvEventLine::Event(event), rx)),
            Err(_) => None,
        }
    });
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|&s| s).await;
    };
    ndjson(first.chain(rest).take_until(stopped))
}

async fn status(State(state): State<WorkerState>) -> Json<WorkerStatus> {
    let s = state.engine.stats();
    Json(WorkerStatus {
        role: state.role.name().to_string(),
        healthy: state.engine.is_alive(),
        block_size: state.block_size,
        num_running: s.num_running,
        num_waiting: s.num_waiting,
        kv_usage: s.kv_usage,
        num_kv_leases: s.num_kv_leases,
        num_loading_kv: s.num_loading_kv,
        num_kv_pulls_discarded: s.num_kv_pulls_discarded,
        kv_arena: Some(state.arena.clone()),
    })
}
