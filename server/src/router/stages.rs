//! Pipelined prefill of long prompts. The router sends a prompt longer than
//! `--pd-stage-tokens` to its prefill worker in stages: first its prefixes
//! at each stage boundary, each computed on top of the previous one (the
//! worker's prefix cache holds it), then the whole prompt. As soon as a
//! prefix is done, the decode worker pulls it — a request that loads the
//! held KV, takes one decode step and is then dropped, which leaves the
//! blocks in its prefix cache — while the prefill worker computes the next
//! stage. The real decode request then finds every prefix cached and pulls
//! only the last stage's blocks: the transfer after the prefill ends is one
//! stage's KV, not the whole prompt's.
//!
//! Nothing new is needed on the workers: stages are ordinary prefill
//! requests and pulls ordinary decode requests. A stage that fails only
//! ends the staging early; the final prefill and decode do the rest.

use std::sync::Arc;

use futures::StreamExt;
use tandem_engine::serving::ServingRequest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::WorkerClient;
use super::pool::Worker;
use super::RouterInner;
use crate::worker::wire::{DecodeRequest, PrefillResponse, StreamLine};

/// The decode worker's pulls of the stages, in order; wait for it before
/// the real decode request so that request finds the prefixes cached.
pub(super) struct Prefetch {
    task: JoinHandle<()>,
}

impl Prefetch {
    pub async fn finish(self) {
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the prefix pulls of a staged prefill panicked");
        }
    }
}

/// The prefix lengths the stages end at (each a multiple of the block
/// size, each shorter than the prompt); none when staging is off or the
/// prompt fits in one stage.
pub(super) fn boundaries(prompt_len: usize, stage_tokens: usize, block_size: usize) -> Vec<usize> {
    let stage = stage_tokens / block_size.max(1) * block_size.max(1);
    if stage == 0 {
        return Vec::new();
    }
    (1..)
        .map(|i| i * stage)
        .take_while(|&b| b < prompt_len)
        .collect()
}

/// Runs every stage but the last on `prefill` and hands each held prefix
/// to `decode` to pull; returns the running pulls, or `None` when the
/// prompt is not staged.
pub(super) async fn run(
    router: &RouterInner,
    req: &ServingRequest,
    prefill: &Arc<Worker>,
    decode: &Arc<Worker>,
) -> Option<Prefetch> {
    let bounds = boundaries(
        req.request.prompt_tokens.len(),
        router.config.pd_stage_tokens,
        router.block_size,
    );
    if bounds.is_empty() {
        return None;
    }
    let client = router.pool.client().clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(pull_prefixes(
        client.clone(),
        prefill.clone(),
        decode.clone(),
        rx,
    ));
    for end in bounds {
        let stage = stage_request(req, end);
        match client.prefill(&prefill.url, &stage).await {
            Ok(PrefillResponse {
                output,
                kv: Some(kv),
            }) => {
                router.metrics.pd_stages.increment(1);
                let output_tokens: Vec<u32> = output.samples.iter().map(|s| s.token).collect();
                let mut request = stage;
                // One decode step after the token sampled there, then done.
                request.request.stop.max_tokens = output_tokens.len() + 1;
                let _ = tx.send(DecodeRequest {
                    request,
                    output_tokens,
                    kv,
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, end, "a prefill stage failed; the rest of the prompt goes in one piece");
                break;
            }
        }
    }
    Some(Prefetch { task })
}

/// The prompt's first `end` tokens as a request the prefill worker hands
/// off after its first token, KV held (it asks for two tokens, so the first
/// does not finish it; EOS ignored, no stop strings).
fn stage_request(req: &ServingRequest, end: usize) -> ServingRequest {
    let mut stage = ServingRequest::new(req.request.clone());
    let r = &mut stage.request;
    r.prompt_tokens.truncate(end);
    r.stop.max_tokens = 2;
    r.stop.min_tokens = 0;
    r.stop.ignore_eos = true;
    r.stop.stop_token_ids.clear();
    stage
}

/// Has `decode` pull each staged prefix in turn. A pull that could not
/// start gives its lease back at once (else it would wait for its expiry).
async fn pull_prefixes(
    client: WorkerClient,
    prefill: Arc<Worker>,
    decode: Arc<Worker>,
    mut stages: mpsc::UnboundedReceiver<DecodeRequest>,
) {
    while let Some(req) = stages.recv().await {
        let lease = req.kv.lease;
        match client.decode(&decode.url, &req).await {
            Ok(mut lines) => {
                while let Some(line) = lines.next().await {
                    match line {
                        Ok(StreamLine::Output(out)) if out.finish_reason.is_some() => break,
                        Ok(StreamLine::Output(_)) => {}
                        Ok(StreamLine::Error(e)) => {
                            tracing::warn!(error = %e.message, "a staged prefix pull failed");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "a staged prefix pull failed");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the decode worker did not take a staged prefix");
                if let Err(e) = client.release(&prefill.url, lease).await {
                    tracing::debug!(error = %e, lease, "releasing a staged lease failed; it expires on its own");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::boundaries;

    #[test]
    fn stages_end_on_block_boundaries_before_the_prompt_ends() {
        assert_eq!(boundaries(4096, 1024, 16), vec![1024, 2048, 3072]);
        assert_eq!(boundaries(4097, 1024, 16), vec![1024, 2048, 3072, 4096]);
        // 1000 rounds down to 992, a multiple of the 16-token block.
        assert_eq!(boundaries(2500, 1000, 16), vec![992, 1984]);
        assert!(boundaries(1024, 1024, 16).is_empty());
        assert!(boundaries(4096, 0, 16).is_empty());
        assert!(boundaries(4096, 8, 16).is_empty());
    }
}
