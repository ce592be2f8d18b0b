//! Per-request text state: turns sampled tokens into text deltas (UTF-8
//! safe), applies stop strings, and keeps the numbers for `usage` and
//! timings. The engine thread runs one per request; the P/D router runs one
//! over the tokens its prefill and decode workers send, so both modes give
//! the same text.

use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

use super::request::{RequestOutput, ServingError, StopReason, Timings, Usage};
use crate::detokenizer::IncrementalDetokenizer;
use crate::engine_core::StepOutput;
use crate::error::Result;
use crate::sampler::SampledToken;
use crate::sequence::{FinishReason, KvLoadTimes};
use crate::stop::{StopMatcher, StopOutcome};
use crate::tokenizer::Tokenizer;

pub(super) type OutputSender = UnboundedSender<Result<RequestOutput, ServingError>>;

pub(super) struct LiveRequest {
    pub tx: OutputSender,
    pub out: OutputBuilder,
}

/// Builds a request's [`RequestOutput`]s from its sampled tokens.
pub struct OutputBuilder {
    detok: IncrementalDetokenizer,
    stop: StopMatcher,
    arrival: Instant,
    first_token: Option<Instant>,
    usage: Usage,
    min_tokens: usize,
    stop_token_ids: Vec<u32>,
    first_scheduled: Option<Instant>,
    kv_load: KvLoadTimes,
}

impl OutputBuilder {
    pub fn new(
        prompt: &[u32],
        stop: StopMatcher,
        min_tokens: usize,
        stop_token_ids: Vec<u32>,
        skip_special_tokens: bool,
        arrival: Instant,
    ) -> Self {
        OutputBuilder {
            detok: IncrementalDetokenizer::new(prompt, skip_special_tokens),
            stop,
            arrival,
            first_token: None,
            usage: Usage {
                prompt_tokens: prompt.len(),
                ..Usage::default()
            },
            min_tokens,
            stop_token_ids,
            first_scheduled: None,
            kv_load: KvLoadTimes::default(),
        }
    }

    /// The engine's step output for this request: [`Self::on_token`] plus
    /// its schedule (for the timings) and its KV handoff.
    pub(super) fn on_step(&mut self, tok: &Tokenizer, out: StepOutput) -> Result<RequestOutput> {
        if self.first_scheduled.is_none() {
            self.first_scheduled = out.first_scheduled;
        }
        self.kv_load = out.kv_load;
        let mut update = self.on_token(tok, out.token, out.finished, out.cached_tokens)?;
        if out.handoff.is_some() {
            // The prefill worker's part of the request ends here: its
            // queue and prefill times go to the router with the handle.
            update.timings = Some(self.timings(Instant::now()));
        }
        update.kv_handoff = out.handoff;
        Ok(update)
    }

    /// Where the request's time went, as of `now` (its last token).
    fn timings(&self, now: Instant) -> Timings {
        let scheduled = self
            .first_scheduled
            .unwrap_or(self.arrival)
            .max(self.arrival);
        let first = self.first_token.unwrap_or(now);
        let KvLoadTimes { started, finished } = self.kv_load;
        let kv_transfer = started
            .zip(finished)
            .map(|(s, f)| f.saturating_duration_since(s));
        Timings {
            queue: scheduled - self.arrival,
            prefill: first.saturating_duration_since(scheduled),
            time_to_first_token: first - self.arrival,
            e2e: now - self.arrival,
            kv_transfer,
            first_decode_step: finished.map(|f| first.saturating_duration_since(f)),
        }
    }

    /// Builds the update for one sampled token; `finished` is set when it
    /// ended the sequence, `cached_tokens` counts the prompt tokens that
    /// came from the prefix cache. A completed stop string finishes the
    /// request here (the caller must then end it where it runs).
    pub fn on_token(
        &mut self,
        tok: &Tokenizer,
        token: SampledToken,
        finished: Option<FinishReason>,
        cached_tokens: usize,
    ) -> Result<RequestOutput> {
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        self.usage.completion_tokens += 1;
        self.usage.cached_tokens = cached_tokens;
        // A token that ended the sequence as EOS / stop id is not text.
        let delta = if finished == Some(FinishReason::Stop) {
            String::new()
        } else {
            self.detok.push(tok, token.token)?
        };
        // As vLLM, stop strings only count once min_tokens were produced.
        let outcome = if self.usage.completion_tokens <= self.min_tokens {
            StopOutcome {
                release: delta,
                stopped: None,
            }
        } else {
            self.stop.push(&delta)
        };
        let mut text = outcome.release;
        let mut finish_reason = finished;
        let mut stop_reason = match finished {
            Some(FinishReason::Stop) if self.stop_token_ids.contains(&token.token) => {
                Some(StopReason::TokenId(token.token))
            }
            _ => None,
        };
        if let Some(s) = outcome.stopped {
            finish_reason = Some(FinishReason::Stop);
            stop_reason = Some(StopReason::Text(s));
        } else if finish_reason.is_some() {
            // Ended by the core: release what the detokenizer and the stop
            // matcher were holding back.
            let tail = self.detok.finish(tok)?;
            let outcome = self.stop.push(&tail);
            text.push_str(&outcome.release);
            match outcome.stopped {
                Some(s) => {
                    finish_reason = Some(FinishReason::Stop);
                    stop_reason = Some(StopReason::Text(s));
                }
                None => text.push_str(&self.stop.flush()),
            }
        }
        let timings = finish_reason.map(|_| self.timings(now));
        Ok(RequestOutput {
            token_ids: vec![token.token],
            samples: vec![token],
            text,
            finish_reason,
            stop_reason,
            usage: self.usage,
            timings,
            kv_handoff: None,
        })
    }
}
