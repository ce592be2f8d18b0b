//! Offline batch generation: every prompt goes through the paged engine
//! together — chunked prefill under a token budget, then batched decode —
//! until each sequence stops. This is what `tandem generate` and the decode
//! benchmark run; the serving engine loop builds on the same pieces.

use std::time::{Duration, Instant};

use crate::batch::{ForwardBatch, SeqChunk};
use crate::error::{EngineError, Result};
use crate::kv_cache::{BlockPool, KvCache};
use crate::models::CausalLm;
use crate::sampler::{sample_batch, SampleInput, SampledToken, SamplingParams, SamplingState};

#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt_tokens: Vec<u32>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    pub ignore_eos: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence token was produced.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

#[derive(Clone, Debug)]
pub struct GenerateOutput {
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    /// Per generated token: its logprob and the requested top logprobs.
    pub samples: Vec<SampledToken>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// From start until every sequence had its first token.
    pub prefill_time: Duration,
    /// From then until the last sequence finished.
    pub decode_time: Duration,
    pub steps: usize,
}

impl GenerateStats {
    /// Tokens per second of the decode phase (tokens after each first one).
    pub fn decode_tokens_per_second(&self, num_seqs: usize) -> f64 {
        let tokens = self.generated_tokens.saturating_sub(num_seqs);
        tokens as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

#[derive(Clone, Debug)]
pub struct OfflineOptions {
    pub block_size: usize,
    /// Upper bound on tokens in one forward (chunked prefill splits prompts).
    pub max_batched_tokens: usize,
    /// Seed for requests that carry none.
    pub seed: u64,
}

impl Default for OfflineOptions {
    fn default() -> Self {
        OfflineOptions {
            block_size: 16,
            max_batched_tokens: 2048,
            seed: 0,
        }
    }
}

struct Seq {
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Tokens whose K/V are already in the cache.
    computed: usize,
    block_table: Vec<u32>,
    state: SamplingState,
    samples: Vec<SampledToken>,
    finished: Option<FinishReason>,
}

/// Generates for all `requests` together and returns outputs in order.
/// `eos_token_ids` end a sequence unless its request ignores EOS.
pub fn generate(
    model: &CausalLm,
    eos_token_ids: &[u32],
    requests: &[GenerateRequest],
    opts: &OfflineOptions,
) -> Result<(Vec<GenerateOutput>, GenerateStats)> {
    let cfg = model.config();
    let max_model_len = cfg.max_position_embeddings;
    let bs = opts.block_size;
    let mut blocks_needed = 0;
    for r in requests {
        r.params.validate()?;
        if r.prompt_tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let total = r.prompt_tokens.len() + r.max_tokens;
        if total > max_model_len {
            return Err(EngineError::TooLong {
                tokens: total,
                max_model_len,
            });
        }
        blocks_needed += total.div_ceil(bs);
    }
    let layout = KvCache::layout_for(cfg, blocks_needed.max(1), bs);
    let kv = KvCache::new(layout, model.dtype(), model.device())?;
    let mut pool = BlockPool::new(layout.num_blocks);
    let mut seqs: Vec<Seq> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let total = r.prompt_tokens.len() + r.max_tokens;
            let block_table =
                pool.allocate(total.div_ceil(bs))
                    .ok_or(EngineError::KvCacheTooSmall {
                        total: layout.num_blocks,
                        needed: total.div_ceil(bs),
                        block_size: bs,
                    })?;
            Ok(Seq {
                tokens: r.prompt_tokens.clone(),
                prompt_len: r.prompt_tokens.len(),
                computed: 0,
                block_table,
                state: SamplingState::new(&r.params, opts.seed.wrapping_add(i as u64)),
                samples: Vec::new(),
                finished: if r.max_tokens == 0 {
                    Some(FinishReason::Length)
                } else {
                    None
                },
            })
        })
        .collect::<Result<_>>()?;

    let start = Instant::now();
    let mut first_tokens_at: Option<Instant> = None;
    let mut stats = GenerateStats {
        prompt_tokens: requests.iter().map(|r| r.prompt_tokens.len()).sum(),
        ..Default::default()
    };
    let vocab = cfg.vocab_size;
    while seqs.iter().any(|s| s.finished.is_none()) {
        // Decodes first (one token each), then prompt chunks fill the budget.
        let mut budget = opts.max_batched_tokens.max(1);
        let mut plan: Vec<(usize, usize)> = Vec::new();
        let mut order: Vec<usize> = (0..seqs.len())
            .filter(|&i| seqs[i].finished.is_none())
            .collect();
        order.sort_by_key(|&i| seqs[i].computed < seqs[i].prompt_len);
        for i in order {
            let s = &seqs[i];
            let n = (s.tokens.len() - s.computed).min(budget);
            if n == 0 {
                continue;
            }
            budget -= n;
            plan.push((i, n));
        }
        // Batch rows in sequence order, so sampled rows line up with `seqs`.
        plan.sort_unstable_by_key(|&(i, _)| i);
        let chunks: Vec<SeqChunk> = plan
            .iter()
            .map(|&(i, n)| {
                let s = &seqs[i];
                SeqChunk {
                    tokens: &s.tokens[s.computed..s.computed + n],
                    start: s.computed,
                    block_table: &s.block_table,
                    wants_logits: s.computed + n == s.tokens.len(),
                    all_logits: false,
                }
            })
            .collect();
        let batch = ForwardBatch::build(&chunks, bs);
        let logits = model
            .forward(&batch, &kv)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        stats.steps += 1;
        let sampled: Vec<usize> = plan
            .iter()
            .filter(|&&(i, n)| seqs[i].computed + n == seqs[i].tokens.len())
            .map(|&(i, _)| i)
            .collect();
        for &(i, n) in &plan {
            seqs[i].computed += n;
        }
        // `sampled` is ascending (the plan is), matching the logits rows.
        let mut inputs: Vec<SampleInput> = seqs
            .iter_mut()
            .zip(requests)
            .enumerate()
            .filter(|(i, _)| sampled.binary_search(i).is_ok())
            .map(|(_, (s, r))| {
                let (prompt, output) = s.tokens.split_at(s.prompt_len);
                SampleInput {
                    params: &r.params,
                    state: &mut s.state,
                    prompt_tokens: prompt,
                    output_tokens: output,
                }
            })
            .collect();
        let results = sample_batch(&logits, vocab, &mut inputs);
        for (&i, tok) in sampled.iter().zip(results) {
            let (s, r) = (&mut seqs[i], &requests[i]);
            s.tokens.push(tok.token);
            s.state.record_output(tok.token);
            let is_eos = !r.ignore_eos && eos_token_ids.contains(&tok.token);
            s.samples.push(tok);
            stats.generated_tokens += 1;
            if is_eos {
                s.finished = Some(FinishReason::Stop);
            } else if s.tokens.len() - s.prompt_len >= r.max_tokens {
                s.finished = Some(FinishReason::Length);
            }
        }
        if first_tokens_at.is_none()
            && seqs
                .iter()
                .all(|s| s.tokens.len() > s.prompt_len || s.finished.is_some())
        {
            first_tokens_at = Some(Instant::now());
        }
    }
    let end = Instant::now();
    let first = first_tokens_at.unwrap_or(end);
    stats.prefill_time = first - start;
    stats.decode_time = end - first;
    let outputs = seqs
        .into_iter()
        .map(|s| GenerateOutput {
            token_ids: s.tokens[s.prompt_len..].to_vec(),
            finish_reason: s.finished.unwrap_or(FinishReason::Length),
            samples: s.samples,
        })
        .collect();
    Ok((outputs, stats))
}
