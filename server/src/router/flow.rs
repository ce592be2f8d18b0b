//! One request through the workers, as DESIGN.md's request path draws it:
//! pick a decode worker; when the uncached part of the prompt is long
//! enough, have a prefill worker compute it first (its first token goes to
//! the client at once), then let the decode worker pull the KV and go on.
//! Failures fall back as the failure rules say: another prefill worker, or
//! the decode worker computes the prompt itself; another decode worker if
//! one fails before it started; an error, never a hang, when none is left.

use std::sync::Arc;

use async_stream::stream;
use futures::stream::{BoxStream, StreamExt};
use tandem_engine::kv_cache::{block_hashes, BlockHash};
use tandem_engine::kv_handoff::KvHandle;
use tandem_engine::serving::{ServingError, ServingRequest};

use super::client::CallError;
use super::pool::{Assignment, Worker};
use super::stages::{self, Prefetch};
use super::{Choice, RouterInner};
use crate::worker::wire::{DecodeRequest, StreamLine, TokenOutput, WireTimings};
use crate::worker::Role;

/// Token updates from the workers, in order; the caller turns them into
/// text. `cached_tokens` of every update is the prefill worker's hit.
pub type TokenStream = BoxStream<'static, Result<TokenOutput, ServingError>>;

/// A prompt a prefill worker computed, its KV held there for the decode
/// worker to pull.
struct Prefilled {
    worker: Arc<Worker>,
    kv: KvHandle,
    /// What the prefill worker sampled (the first token).
    output_tokens: Vec<u32>,
    /// Prompt tokens the prefill worker found in its prefix cache: every
    /// later update reports these.
    cached_tokens: usize,
    /// The prefill worker's queue and prefill times, reported with the
    /// request's last line.
    timings: Option<WireTimings>,
}

impl Prefilled {
    /// Gives the lease back: no decode worker will pull it.
    fn abandon(&self, router: &RouterInner) {
        router.release_later(self.worker.clone(), self.kv.lease);
    }
}

pub fn run(router: Arc<RouterInner>, req: ServingRequest) -> TokenStream {
    stream! {
        let prompt = req.request.prompt_tokens.clone();
        let hashes = block_hashes(&prompt, router.block_size);
        let mut tried_decode: Vec<String> = Vec::new();
        let Some(Choice { worker: decode, score }) = router.choose(Role::Decode, &hashes, &tried_decode) else {
            yield Err(no_workers("decode"));
            return;
        };
        // In flight on its decode worker from the decision on, not from the
        // end of its prefill: requests routed meanwhile see it in the queue.
        let mut held = Some(decode.assign());
        let uncached = prompt
            .len()
            .saturating_sub(score.overlap_blocks * router.block_size);
        let remote = decode.role == Role::Decode
            && router.pool.has_role(Role::Prefill)
            && uncached >= router.config.pd_threshold;

        let mut handoff: Option<Prefilled> = None;
        let mut prefetch: Option<Prefetch> = None;
        if remote {
            let (outcome, staged) = prefill(&router, &req, &hashes, &decode).await;
            prefetch = staged;
            match outcome {
                PrefillOutcome::Done { mut first, worker, kv } => {
                    router.metrics.disaggregated.increment(1);
                    let cached_tokens = first.cached_tokens;
                    let finished = first.finish_reason.is_some();
                    // Reported once, with the last line (this one if it is).
                    let timings = if finished { first.timings } else { first.timings.take() };
                    let output_tokens: Vec<u32> = first.samples.iter().map(|s| s.token).collect();
                    yield Ok(first);
                    if finished {
                        return;
                    }
                    match kv {
                        Some(kv) => handoff = Some(Prefilled { worker, kv, output_tokens, cached_tokens, timings }),
                        None => {
                            yield Err(ServingError::Engine("the prefill worker neither finished the request nor held its KV".into()));
                            return;
                        }
                    }
                }
                PrefillOutcome::Refused(e) => {
                    yield Err(e);
                    return;
                }
                PrefillOutcome::NoneLeft => {
                    router.metrics.decode_only.increment(1);
                    router.metrics.fallback_local_prefill.increment(1);
                    tracing::warn!("no prefill worker could take the request; the decode worker computes the prompt");
                }
            }
        }

        if !remote {
            router.metrics.decode_only.increment(1);
        }
        // The decode worker pulls the staged prefixes first, so the request
        // below finds them in its prefix cache and pulls only the rest.
        if let Some(p) = prefetch.take() {
            p.finish().await;
        }
        // Decode (or the whole request, when it was not disaggregated).
        let mut current = Some(decode);
        let mut lines = loop {
            let worker = match current.take() {
                Some(w) => w,
                None => match router.choose(Role::Decode, &hashes, &tried_decode) {
                    Some(choice) => choice.worker,
                    None => {
                        if let Some(p) = &handoff {
                            p.abandon(&router);
                        }
                        yield Err(no_workers("decode"));
                        return;
                    }
                },
            };
            tried_decode.push(worker.url.clone());
            // The first try is the worker chosen above, already counted.
            let assignment = held.take().unwrap_or_else(|| worker.assign());
            let call = match &handoff {
                Some(p) => {
                    let body = DecodeRequest { request: req.clone(), output_tokens: p.output_tokens.clone(), kv: p.kv.clone() };
                    router.pool.client().decode(&worker.url, &body).await
                }
                None => router.pool.client().generate(&worker.url, &req).await,
            };
            match call {
                Ok(lines) => break WithAssignment { lines, _assignment: assignment },
                Err(CallError::Refused(e)) => {
                    if let Some(p) = &handoff {
                        p.abandon(&router);
                    }
                    yield Err(e.into());
                    return;
                }
                Err(e @ CallError::Unavailable { .. }) => {
                    tracing::warn!(error = %e, "decode worker failed before starting; trying another");
                    worker.mark_failed();
                    router.metrics.decode_retries.increment(1);
                }
            }
        };
        let prefill_cached = handoff.as_ref().map(|p| p.cached_tokens);
        let prefill_timings = handoff.as_ref().and_then(|p| p.timings);
        while let Some(line) = lines.lines.next().await {
            match line {
                Ok(StreamLine::Output(mut out)) => {
                    if let Some(c) = prefill_cached {
                        out.cached_tokens = c;
                    }
                    let done = out.finish_reason.is_some();
                    if done {
                        out.timings = split_timings(prefill_timings, out.timings);
                    }
                    yield Ok(out);
                    if done {
                        return;
                    }
                }
                Ok(StreamLine::Error(e)) => {
                    yield Err(e.into());
                    return;
                }
                Err(e) => {
                    yield Err(ServingError::Engine(format!("the decode worker failed mid-stream: {e}")));
                    return;
                }
            }
        }
        yield Err(ServingError::Engine("the decode worker ended the stream without finishing the request".into()));
    }
    .boxed()
}

/// Keeps the worker's in-flight count up while its stream is read.
struct WithAssignment {
    lines: BoxStream<'static, Result<StreamLine, CallError>>,
    _assignment: Assignment,
}

enum PrefillOutcome {
    /// `first` is the first token; `kv` is absent when it finished the request.
    Done {
        first: TokenOutput,
        worker: Arc<Worker>,
        kv: Option<KvHandle>,
    },
    Refused(ServingError),
    NoneLeft,
}

/// Tries prefill workers, best first, until one answers. A long prompt is
/// prefilled in stages on the first worker tried, its prefixes pulled by
/// `decode` meanwhile (see [`stages`](super::stages)); the pulls still
/// running come back with the outcome.
async fn prefill(
    router: &RouterInner,
    req: &ServingRequest,
    hashes: &[BlockHash],
    decode: &Arc<Worker>,
) -> (PrefillOutcome, Option<Prefetch>) {
    let mut tried: Vec<String> = Vec::new();
    let mut prefetch = None;
    while let Some(Choice { worker, .. }) = router.choose(Role::Prefill, hashes, &tried) {
        tried.push(worker.url.clone());
        let _assignment = worker.assign();
        let started = std::time::Instant::now();
        if prefetch.is_none() {
            prefetch = stages::run(router, req, &worker, decode).await;
        }
        match router.pool.client().prefill(&worker.url, req).await {
            Ok(resp) => {
                router
                    .metrics
                    .prefill_seconds
                    .record(started.elapsed().as_secs_f64());
                let done = PrefillOutcome::Done {
                    first: resp.output,
                    worker: worker.clone(),
                    kv: resp.kv,
                };
                return (done, prefetch);
            }
            Err(CallError::Refused(e)) => return (PrefillOutcome::Refused(e.into()), prefetch),
            Err(e) => {
                tracing::warn!(error = %e, "prefill worker failed; trying another");
                worker.mark_failed();
                router.metrics.prefill_retries.increment(1);
            }
        }
    }
    (PrefillOutcome::NoneLeft, prefetch)
}

/// A disaggregated request's time: queue and prefill on the prefill worker,
/// the KV pull and the first step on the decode worker. Without a prefill
/// worker's part (not disaggregated) the decode worker's is the whole.
fn split_timings(prefill: Option<WireTimings>, decode: Option<WireTimings>) -> Option<WireTimings> {
    match (prefill, decode) {
        (Some(p), Some(d)) => Some(WireTimings {
            queue_s: p.queue_s,
            prefill_s: p.prefill_s,
            kv_transfer_s: d.kv_transfer_s,
            first_decode_step_s: d.first_decode_step_s,
        }),
        (p, d) => d.or(p),
    }
}

fn no_workers(role: &str) -> ServingError {
    ServingError::Unavailable(format!(
        "no healthy {role} worker is available; retry shortly, and check the workers' /health and the router's log"
    ))
}
