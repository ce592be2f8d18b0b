//! Offline batch generation: every prompt goes through the paged engine
//! together — chunked prefill under a token budget, then batched decode —
//! until each sequence stops. This is what `tandem generate` and the decode
//! benchmark run; the serving engine loop builds on the same pieces.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{ForwardBatch, SeqChunk};
use crate::engine_core::EngineCore;
use crate::error::Result;
use crate::guided::GuidanceCompiler;
use crate::kv_cache::{ComputedBlocks, KvCacheManager, SeqBlocks};
use crate::models::CausalLm;
use crate::runner::{DeviceSpec, KvBudget, ModelRunner, RunnerOptions};
use crate::sampler::{SampledToken, SamplingParams};
use crate::scheduler::SchedulerConfig;
use crate::sequence::{Request, SeqId, StopConditions};

#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt_tokens: Vec<u32>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    pub ignore_eos: bool,
}

pub use crate::sequence::FinishReason;

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
    /// Steps within `decode_time`.
    pub decode_steps: usize,
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
    pub max_num_seqs: usize,
    /// KV blocks; `None` sizes the cache so every request fits at once.
    pub num_blocks: Option<usize>,
    pub enable_prefix_caching: bool,
    /// Seed for requests that carry none.
    pub seed: u64,
    /// Where the model runs (`--device`).
    pub device: DeviceSpec,
    /// Compiles requests' guided-decoding constraints; requests with one
    /// are refused without it.
    pub guidance: Option<Arc<GuidanceCompiler>>,
}

impl Default for OfflineOptions {
    fn default() -> Self {
        OfflineOptions {
            block_size: 16,
            max_batched_tokens: 2048,
            max_num_seqs: 256,
            num_blocks: None,
            enable_prefix_caching: true,
            seed: 0,
            device: DeviceSpec::Cpu,
            guidance: None,
        }
    }
}

/// Generates for all `requests` together and returns outputs in order.
/// `eos_token_ids` end a sequence unless its request ignores EOS.
pub fn generate(
    model: &CausalLm,
    eos_token_ids: &[u32],
    requests: &[GenerateRequest],
    opts: &OfflineOptions,
) -> Result<(Vec<GenerateOutput>, GenerateStats)> {
    let bs = opts.block_size;
    let num_blocks = opts.num_blocks.unwrap_or_else(|| {
        requests
            .iter()
            .map(|r| (r.prompt_tokens.len() + r.max_tokens).div_ceil(bs))
            .sum::<usize>()
            .max(1)
    });
    let config = SchedulerConfig {
        max_num_seqs: opts.max_num_seqs,
        max_num_batched_tokens: opts.max_batched_tokens,
        block_size: bs,
        enable_prefix_caching: opts.enable_prefix_caching,
    };
    let runner = ModelRunner::new(
        model,
        &RunnerOptions {
            device: opts.device,
            kv: KvBudget::Blocks(num_blocks),
            block_size: bs,
            max_num_batched_tokens: opts.max_batched_tokens,
            max_num_seqs: opts.max_num_seqs,
        },
    )?;
    let mut core = EngineCore::new(runner, eos_token_ids.to_vec(), config, opts.seed)?;
    if let Some(g) = &opts.guidance {
        core.set_guidance(g.clone());
    }
    let mut outputs: Vec<GenerateOutput> = requests
        .iter()
        .map(|_| GenerateOutput {
            token_ids: Vec::new(),
            finish_reason: FinishReason::Length,
            samples: Vec::new(),
        })
        .collect();
    let mut pending_first = 0;
    for (i, r) in requests.iter().enumerate() {
        if r.max_tokens == 0 {
            continue;
        }
        let stop = StopConditions {
            max_tokens: r.max_tokens,
            ignore_eos: r.ignore_eos,
            ..Default::default()
        };
        core.add_request(
            i as SeqId,
            Request {
                prompt_tokens: r.prompt_tokens.clone(),
                params: r.params.clone(),
                stop,
                handoff: Default::default(),
            },
        )?;
        pending_first += 1;
    }
    let mut stats = GenerateStats {
        prompt_tokens: requests.iter().map(|r| r.prompt_tokens.len()).sum(),
        ..Default::default()
    };
    let start = Instant::now();
    let mut first_tokens_at = (pending_first == 0).then_some(start);
    while core.has_unfinished() {
        if first_tokens_at.is_some() {
            stats.decode_steps += 1;
        }
        for out in core.step()? {
            let o = &mut outputs[out.id as usize];
            if o.token_ids.is_empty() {
                pending_first -= 1;
            }
            o.token_ids.push(out.token.token);
            o.samples.push(out.token);
            if let Some(reason) = out.finished {
                o.finish_reason = reason;
            }
            stats.generated_tokens += 1;
        }
        stats.steps += 1;
        if first_tokens_at.is_none() && pending_first == 0 {
            first_tokens_at = Some(Instant::now());
        }
    }
    let end = Instant::now();
    let first = first_tokens_at.unwrap_or(end);
    stats.prefill_time = first - start;
    stats.decode_time = end - first;
    Ok((outputs, stats))
}

/// The logits at every position of `tokens`, computed as one prefill on
/// `device` over a fresh KV cache: `[tokens.len()][vocab]`, f32. What a
/// perplexity or an oracle comparison needs.
pub fn prompt_logits(
    model: &CausalLm,
    tokens: &[u32],
    device: DeviceSpec,
) -> Result<Vec<Vec<f32>>> {
    let bs = 16;
    let blocks = tokens.len().div_ceil(bs).max(1);
    let mut runner = ModelRunner::new(
        model,
        &RunnerOptions {
            device,
            kv: KvBudget::Blocks(blocks),
            block_size: bs,
            max_num_batched_tokens: tokens.len(),
            max_num_seqs: 1,
        },
    )?;
    let mut manager = KvCacheManager::new(blocks, bs, false);
    let mut table = SeqBlocks::default();
    assert!(
        manager.allocate_slots(&mut table, tokens.len(), ComputedBlocks::none()),
        "a fresh cache sized for the prompt holds it"
    );
    let chunk = SeqChunk {
        tokens,
        start: 0,
        block_table: table.table(),
        wants_logits: true,
        all_logits: true,
    };
    let flat = runner.forward(&ForwardBatch::build(&[chunk], bs))?;
    Ok(flat
        .chunks(model.config().vocab_size)
        .map(<[f32]>::to_vec)
        .collect())
}
