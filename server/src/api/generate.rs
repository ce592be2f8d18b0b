//! One API request becomes one backend sequence per (prompt, choice): this
//! module admits them (or refuses with 429), starts them, merges their
//! updates into one stream tagged with the choice index, feeds metrics, and
//! for non-streaming requests collects the finished choices.
//!
//! Every sequence stream stays owned by the merged stream, which the handler
//! future or the SSE body owns: a client that disconnects drops it, and that
//! aborts every sequence of the request in the backend.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{SelectAll, Stream, StreamExt};
use serde::Serialize;
use tandem_engine::sequence::FinishReason;
use tandem_engine::serving::{RequestOutput, ServingError, ServingRequest, Usage};

use super::backend::OutputStream;
use super::errors::ApiError;
use super::metrics::Metrics;
use super::AppState;

/// Bounds the sequences admitted but without a first token yet
/// (`--max-waiting`). Counted here rather than read from engine stats so a
/// burst is refused at once, not one engine step later.
pub struct Admission {
    pending: AtomicUsize,
    max_waiting: usize,
}

/// Holds one admission slot until the sequence's first update or its end.
struct Ticket(Arc<Admission>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max_waiting: usize) -> Arc<Self> {
        Arc::new(Admission {
            pending: AtomicUsize::new(0),
            max_waiting,
        })
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Admits `k` sequences together, or none.
    fn admit(self: &Arc<Self>, k: usize) -> Result<Vec<Ticket>, ApiError> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p + k <= self.max_waiting).then_some(p + k)
            })
            .map_err(|p| ApiError::overloaded(p, self.max_waiting))?;
        Ok((0..k).map(|_| Ticket(self.clone())).collect())
    }
}

/// One sequence's updates, tagged with its choice index, feeding metrics.
pub struct Tracked {
    index: usize,
    inner: OutputStream,
    ticket: Option<Ticket>,
    metrics: Arc<Metrics>,
    seen_first: bool,
    ended: bool,
    /// With `--log-prompts`: the choice's text so far, logged at its end.
    logged: Option<PromptLog>,
}

/// One choice's prompt and output as `--log-prompts` logs them (at info,
/// target `tandem::prompts`); without the flag no text is ever logged.
struct PromptLog {
    request: String,
    text: String,
}

impl PromptLog {
    /// Logs the prompt, decoded on the blocking pool.
    fn start(state: &AppState, request: &str, prompt: &[u32]) -> Self {
        let (tok, ids, id) = (
            state.model.tokenizer.clone(),
            prompt.to_vec(),
            request.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let prompt = tok.decode(&ids, false).unwrap_or_default();
            tracing::info!(target: "tandem::prompts", request = %id, %prompt, "prompt");
        });
        PromptLog {
            request: request.to_string(),
            text: String::new(),
        }
    }

    fn end(&self, finish: &str) {
        tracing::info!(target: "tandem::prompts", request = %self.request, finish, completion = %self.text, "completion");
    }
}

impl Stream for Tracked {
    type Item = (usize, Result<RequestOutput, ServingError>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = match self.inner.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        self.ticket = None;
        match &item {
            Some(Ok(out)) => {
                self.metrics.on_output(out, !self.seen_first);
                self.seen_first = true;
                self.ended = out.finish_reason.is_some();
                if let Some(log) = &mut self.logged {
                    log.text.push_str(&out.text);
                    if let Some(reason) = out.finish_reason {
                        log.end(finish_reason_str(reason));
                    }
                }
            }
            Some(Err(_)) => {
                self.metrics.on_error();
                self.ended = true;
            }
            None => self.ended = true,
        }
        Poll::Ready(item.map(|i| (self.index, i)))
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.ended {
            self.metrics.on_abort();
        }
    }
}

/// The sequences of one API request, started.
pub struct Launched {
    pub stream: SelectAll<Tracked>,
    pub tally: Tally,
}

/// Starts `prompts[p]`'s sequences as choices `p * n ..`, in order.
pub fn launch(state: &AppState, prompts: Vec<Vec<ServingRequest>>) -> Result<Launched, ApiError> {
    let total: usize = prompts.iter().map(Vec::len).sum();
    let mut tickets = match state.admission.admit(total) {
        Ok(t) => t,
        Err(e) => {
            state.metrics.on_overload();
            return Err(e);
        }
    };
    let mut prompt_of = Vec::with_capacity(total);
    let mut streams = SelectAll::new();
    // Ties a request's logged prompts to their completions.
    let log_id: u32 = if state.log_prompts { rand::random() } else { 0 };
    for (p, requests) in prompts.into_iter().enumerate() {
        for request in requests {
            let index = prompt_of.len();
            prompt_of.push(p);
            let logged = state.log_prompts.then(|| {
                let id = format!("{log_id:08x}#{index}");
                PromptLog::start(state, &id, &request.request.prompt_tokens)
            });
            streams.push(Tracked {
                index,
                inner: state.backend.generate(request),
                ticket: tickets.pop(),
                metrics: state.metrics.clone(),
                seen_first: false,
                ended: false,
                logged,
            });
        }
    }
    Ok(Launched {
        stream: streams,
        tally: Tally::new(prompt_of),
    })
}

/// `usage` as OpenAI and vLLM report it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UsageInfo {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

/// Token counts per choice; a prompt shared by `n` choices counts once.
pub struct Tally {
    prompt_of: Vec<usize>,
    last: Vec<Usage>,
}

impl Tally {
    pub fn new(prompt_of: Vec<usize>) -> Self {
        let last = vec![Usage::default(); prompt_of.len()];
        Tally { prompt_of, last }
    }

    pub fn num_choices(&self) -> usize {
        self.prompt_of.len()
    }

    pub fn record(&mut self, index: usize, usage: Usage) {
        self.last[index] = usage;
    }

    pub fn total(&self) -> UsageInfo {
        let mut counted = Vec::new();
        let mut u = UsageInfo::default();
        for (usage, &p) in self.last.iter().zip(&self.prompt_of) {
            u.completion_tokens += usage.completion_tokens;
            // The first choice of a prompt that ran reports its prompt.
            if usage.prompt_tokens > 0 && !counted.contains(&p) {
                counted.push(p);
                u.prompt_tokens += usage.prompt_tokens;
                u.prompt_tokens_details.cached_tokens += usage.cached_tokens;
            }
        }
        u.total_tokens = u.prompt_tokens + u.completion_tokens;
        u
    }
}

/// Runs every choice to its end: each choice's updates merged into one
/// output, as if the whole choice had come in one update. The first error
/// fails the whole request (dropping the rest aborts them).
pub async fn collect(launched: Launched) -> Result<(Vec<RequestOutput>, UsageInfo), ApiError> {
    let Launched {
        mut stream,
        mut tally,
    } = launched;
    let mut choices = vec![RequestOutput::default(); tally.num_choices()];
    while let Some((index, item)) = stream.next().await {
        let out = item?;
        tally.record(index, out.usage);
        let c = &mut choices[index];
        c.text.push_str(&out.text);
        c.token_ids.extend(out.token_ids);
        c.samples.extend(out.samples);
        c.finish_reason = out.finish_reason;
        c.stop_reason = out.stop_reason;
        c.usage = out.usage;
        c.timings = out.timings;
    }
    if choices.iter().any(|c| c.finish_reason.is_none()) {
        return Err(ApiError::internal(
            "a sequence ended without a finish reason",
        ));
    }
    Ok((choices, tally.total()))
}

/// vLLM's finish reasons as the API spells them.
pub fn finish_reason_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Abort => "abort",
    }
}
