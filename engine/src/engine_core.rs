//! One engine step, synchronously: schedule → forward → sample → update.
//! The serving loop (on its own thread) and offline generation both drive
//! this; nothing here knows about HTTP, channels or text.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::guided::GuidanceCompiler;
use crate::kv_cache::{block_hashes, BlockChecksum, BlockHash, BlockId, KvEvent, PrefixCacheStats};
use crate::kv_handoff::{BlockPair, KvHandle, KvLoad};
use crate::runner::ModelRunner;
use crate::sampler::{sample_batch, SampledToken};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::sequence::{FinishReason, KvHandoff, KvLoadTimes, Request, SeqId, Sequence};

/// What one sequence got from a step.
#[derive(Clone, Debug)]
pub struct StepOutput {
    pub id: SeqId,
    pub token: SampledToken,
    /// Set when this token ended the sequence (it is then removed).
    pub finished: Option<FinishReason>,
    /// Prompt tokens that came from the prefix cache.
    pub cached_tokens: usize,
    /// When the sequence was first scheduled (its queue time ends there).
    pub first_scheduled: Option<std::time::Instant>,
    /// Prefill role: the sequence ended after this token and its prompt
    /// blocks are held for a decode worker.
    pub handoff: Option<KvHandle>,
    /// Decode role: when the pull of its prompt KV started and ended.
    pub kv_load: KvLoadTimes,
}

/// Load figures for metrics and routing.
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineStats {
    pub num_running: usize,
    pub num_waiting: usize,
    pub kv_usage: f64,
    pub prefix_cache: PrefixCacheStats,
    pub num_preemptions: u64,
    /// Prefill role: leases still holding blocks for decode workers.
    pub num_kv_leases: usize,
    /// Decode role: sequences waiting for their prompt KV to arrive.
    pub num_loading_kv: usize,
    /// Decode role: pulls that landed with bytes other than the prefill
    /// worker's (checksum mismatch), whose prompts were computed here.
    pub num_kv_pulls_discarded: u64,
}

pub struct EngineCore {
    runner: ModelRunner,
    scheduler: Scheduler,
    eos_token_ids: Vec<u32>,
    seed: u64,
    /// Compiles requests' structured-output constraints; without it such
    /// requests are refused.
    guidance: Option<Arc<GuidanceCompiler>>,
    /// Decode role: the blocks each loading sequence is pulling, checked
    /// against their checksums when the pull ends.
    pulls: HashMap<SeqId, Vec<BlockPair>>,
    pulls_discarded: u64,
}

impl EngineCore {
    /// An engine over the runner's model and KV arena (whose block size
    /// must be the scheduler's).
    pub fn new(
        runner: ModelRunner,
        eos_token_ids: Vec<u32>,
        config: SchedulerConfig,
        seed: u64,
    ) -> Result<Self> {
        let arena = runner.arena_info();
        assert_eq!(
            runner.layout().block_size,
            config.block_size,
            "the runner's arena and the scheduler use one block size"
        );
        tracing::info!(
            device = %arena.device,
            num_blocks = arena.num_blocks,
            block_size = config.block_size,
            max_tokens = arena.num_blocks * config.block_size,
            kv_bytes = arena.bytes,
            "KV cache allocated"
        );
        Ok(EngineCore {
            scheduler: Scheduler::new(config, arena.num_blocks),
            runner,
            eos_token_ids,
            seed,
            guidance: None,
            pulls: HashMap::new(),
            pulls_discarded: 0,
        })
    }

    /// Lets the engine apply structured-output constraints (compiled
    /// against the tokenizer the compiler was made with).
    pub fn set_guidance(&mut self, compiler: Arc<GuidanceCompiler>) {
        self.guidance = Some(compiler);
    }

    /// The ids that end a sequence (generation config's EOS tokens).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    pub fn guidance(&self) -> Option<&Arc<GuidanceCompiler>> {
        self.guidance.as_ref()
    }

    pub fn runner(&self) -> &ModelRunner {
        &self.runner
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Queues a request after checking it can ever fit.
    pub fn add_request(&mut self, id: SeqId, req: Request) -> Result<()> {
        req.params.validate()?;
        if req.prompt_tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let total = req.prompt_tokens.len() + req.stop.max_tokens;
        let max_model_len = self.runner.config().max_position_embeddings;
        if total > max_model_len {
            return Err(EngineError::TooLong {
                tokens: total,
                max_model_len,
            });
        }
        let bs = self.scheduler.config().block_size;
        if let KvHandoff::Load { remote, .. } = &req.handoff {
            let prompt_blocks = req.prompt_tokens.len().div_ceil(bs);
            if remote.block_ids.len() != prompt_blocks {
                return Err(EngineError::HandoffMismatch {
                    blocks: remote.block_ids.len(),
                    prompt_tokens: req.prompt_tokens.len(),
                    block_size: bs,
                });
            }
            // The same tokens must give the same chained hashes on both
            // sides, or the prefix caches and the router disagree.
            let full = req.prompt_tokens.len() / bs;
            if remote.block_hashes != block_hashes(&req.prompt_tokens[..full * bs], bs) {
                return Err(EngineError::HandoffHashMismatch);
            }
            if remote.block_checksums.len() != remote.block_ids.len() {
                return Err(EngineError::HandoffChecksums {
                    checksums: remote.block_checksums.len(),
                    blocks: remote.block_ids.len(),
                });
            }
        }
        if total > self.scheduler.token_capacity() {
            return Err(EngineError::KvCacheTooSmall {
                total: self.scheduler.token_capacity() / bs,
                needed: total.div_ceil(bs),
                block_size: bs,
            });
        }
        // Compiled grammars are cached: callers that compiled this
        // constraint beforehand (on a blocking thread) make this a clone.
        let guide = match &req.params.guided {
            None => None,
            Some(spec) => {
                let compiler = self.guidance.as_ref().ok_or(EngineError::Guided(
                    crate::guided::GuidedError::Unavailable(
                        "this engine was started without a tokenizer to compile grammars against"
                            .into(),
                    ),
                ))?;
                Some(compiler.compile(spec)?)
            }
        };
        // Unseeded requests still get a distinct, reproducible stream.
        let seq = Sequence::new(id, req, guide, self.seed.wrapping_add(id), bs);
        self.scheduler.add(seq);
        Ok(())
    }

    /// Ends a sequence early (abort, stop string); frees its blocks.
    pub fn finish(&mut self, id: SeqId, reason: FinishReason) -> Option<Sequence> {
        self.scheduler.finish(id, reason)
    }

    pub fn has_unfinished(&self) -> bool {
        self.scheduler.has_unfinished()
    }

    /// Pulls the decode side must start (see [`crate::kv_handoff`]).
    pub fn take_kv_loads(&mut self) -> Vec<KvLoad> {
        let loads = self.scheduler.take_kv_loads();
        for load in &loads {
            self.pulls.insert(load.seq, load.pairs.clone());
        }
        loads
    }

    /// A pull ended. Its blocks are used only if it succeeded and every
    /// pulled block hashes to the prefill worker's checksum; otherwise the
    /// engine computes the prompt itself.
    pub fn kv_loaded(&mut self, id: SeqId, outcome: std::result::Result<(), String>) {
        let pairs = self.pulls.remove(&id).unwrap_or_default();
        let outcome = outcome.and_then(|()| self.check_pulled(&pairs));
        if let Err(e) = &outcome {
            tracing::warn!(seq = id, error = %e, "KV pull not usable; computing the prompt here");
        }
        self.scheduler.kv_loaded(id, outcome.is_ok());
    }

    /// The first pulled block whose bytes are not the prefill worker's.
    fn check_pulled(&mut self, pairs: &[BlockPair]) -> std::result::Result<(), String> {
        let kv = self.runner.host_kv_cache().map_err(|e| e.to_string())?;
        let Some(bad) = pairs
            .iter()
            .find(|p| kv.block_checksum(p.local) != p.checksum)
        else {
            return Ok(());
        };
        self.pulls_discarded += 1;
        Err(format!(
            "remote block {} changed while it was read (its lease expired mid-pull, or the \
             transport delivered other bytes): checksum mismatch in local block {}",
            bad.remote, bad.local
        ))
    }

    /// Checksums of `blocks` as they are now (prefill role, at handoff).
    fn block_checksums(&self, blocks: &[BlockId]) -> Result<Vec<BlockChecksum>> {
        let kv = self.runner.host_kv_cache()?;
        Ok(blocks.iter().map(|&b| kv.block_checksum(b)).collect())
    }

    /// Frees a prefill lease's blocks (they stay in the prefix cache).
    /// False when the lease is unknown (already released or expired).
    pub fn release_lease(&mut self, lease: u64) -> bool {
        self.scheduler.release_lease(lease)
    }

    /// Hashes of every block in the prefix cache now (a KV-event snapshot).
    pub fn cached_block_hashes(&self) -> Vec<BlockHash> {
        self.scheduler.kv_cache().cached_hashes()
    }

    pub fn stats(&self) -> EngineStats {
        let kv = self.scheduler.kv_cache();
        EngineStats {
            num_running: self.scheduler.num_running(),
            num_waiting: self.scheduler.num_waiting(),
            kv_usage: kv.usage(),
            prefix_cache: kv.prefix_cache_stats(),
            num_preemptions: self.scheduler.num_preemptions(),
            num_kv_leases: kv.num_leases(),
            num_loading_kv: self.scheduler.num_loading(),
            num_kv_pulls_discarded: self.pulls_discarded,
        }
    }

    pub fn take_kv_events(&mut self) -> Vec<KvEvent> {
        self.scheduler.take_kv_events()
    }

    /// Runs one step; returns a token for every sequence that sampled one.
    pub fn step(&mut self) -> Result<Vec<StepOutput>> {
        let plan = self.scheduler.schedule();
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.scheduler.forward_batch(&plan);
        let sampled: Vec<SeqId> = plan
            .chunks
            .iter()
            .filter(|c| c.sample)
            .map(|c| c.id)
            .collect();
        let logits = if self.scheduler.any_guided(&sampled) {
            // Grammar masks are computed while the model runs, off its path.
            let (runner, scheduler) = (&mut self.runner, &mut self.scheduler);
            let (logits, ()) = rayon::join(
                || runner.forward(&batch),
                || scheduler.prepare_guides(&sampled),
            );
            logits?
        } else {
            // On a pool thread, so the kernels' parallel loops run where
            // they are scheduled instead of being injected from outside.
            let runner = &mut self.runner;
            rayon::scope(|_| runner.forward(&batch))?
        };
        self.scheduler.mark_computed(&plan);
        let tokens = {
            let mut inputs = self.scheduler.sample_inputs(&sampled);
            sample_batch(&logits, self.runner.config().vocab_size, &mut inputs)
        };
        let mut outputs = Vec::with_capacity(tokens.len());
        for (id, token) in sampled.into_iter().zip(tokens) {
            let seq = self.scheduler.get_mut(id).expect("scheduled ids exist");
            let finished = seq.append(&token, &self.eos_token_ids);
            let cached_tokens = seq.num_cached_prompt_tokens();
            let first_scheduled = seq.first_scheduled();
            let kv_load = seq.kv_load_times();
            let hold = matches!(seq.handoff(), KvHandoff::Hold);
            let mut handoff = None;
            if let Some(reason) = finished {
                self.scheduler.finish(id, reason);
            } else if hold {
                // The prompt's blocks stay held under lease `id`.
                let table = self
                    .scheduler
                    .get(id)
                    .expect("scheduled")
                    .block_table()
                    .to_vec();
                let checksums = self.block_checksums(&table)?;
                handoff = Some(self.scheduler.detach(id, checksums).expect("scheduled"));
            }
            outputs.push(StepOutput {
                id,
                token,
                finished,
                cached_tokens,
                first_scheduled,
                handoff,
                kv_load,
            });
        }
        Ok(outputs)
    }
}
