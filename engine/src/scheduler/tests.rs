//! Scheduler behaviour without a model: steps are simulated by marking the
//! planned chunks computed and appending a made-up token to each sample.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::kv_cache::{block_hashes, BlockChecksum, BlockId};
use crate::kv_handoff::{BlockPair, KvHandle};
use crate::sampler::{SampledToken, SamplingParams};
use crate::sequence::{KvHandoff, Request, StopConditions};

const BLOCK_SIZE: usize = 4;

fn seq(id: SeqId, prompt: Vec<u32>, max_tokens: usize) -> Sequence {
    seq_with(id, prompt, max_tokens, KvHandoff::None)
}

fn seq_with(id: SeqId, prompt: Vec<u32>, max_tokens: usize, handoff: KvHandoff) -> Sequence {
    let stop = StopConditions {
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    };
    Sequence::new(
        id,
        Request {
            prompt_tokens: prompt,
            params: SamplingParams::greedy(),
            stop,
            handoff,
        },
        None,
        0,
        BLOCK_SIZE,
    )
}

fn sched(num_blocks: usize, max_num_seqs: usize, budget: usize) -> Scheduler {
    let cfg = SchedulerConfig {
        max_num_seqs,
        max_num_batched_tokens: budget,
        block_size: BLOCK_SIZE,
        enable_prefix_caching: true,
    };
    Scheduler::new(cfg, num_blocks)
}

/// Runs one simulated step; returns the plan and the ids that finished.
fn step(s: &mut Scheduler, token: u32) -> (SchedulerOutput, Vec<SeqId>) {
    let plan = s.schedule();
    s.mark_computed(&plan);
    let mut done = Vec::new();
    for c in plan.chunks.iter().filter(|c| c.sample) {
        let t = SampledToken {
            token,
            logprob: 0.0,
            top_logprobs: Vec::new(),
        };
        if let Some(reason) = s.get_mut(c.id).unwrap().append(&t, &[]) {
            s.finish(c.id, reason);
            done.push(c.id);
        }
    }
    (plan, done)
}

/// Every block's count equals the number of live sequences holding it.
fn check_ref_counts(s: &Scheduler) {
    let mut holders: HashMap<BlockId, u32> = HashMap::new();
    for seq in s.seqs.values() {
        for &b in seq.block_table() {
            *holders.entry(b).or_default() += 1;
        }
    }
    let kv = s.kv_cache();
    for b in (0..kv.num_blocks() as u32).map(BlockId) {
        assert_eq!(
            kv.ref_count(b),
            holders.get(&b).copied().unwrap_or(0),
            "block {b}"
        );
    }
    let used = holders.len();
    assert_eq!(
        kv.num_free_blocks() + used,
        kv.num_blocks(),
        "free + used = total"
    );
}

#[test]
fn chunked_prefill_respects_the_budget_and_decodes_go_first() {
    let mut s = sched(64, 8, 6);
    s.add(seq(1, (0..10).collect(), 3));
    let (p, _) = step(&mut s, 7);
    assert_eq!(
        p.chunks,
        vec![ScheduledChunk {
            id: 1,
            start: 0,
            len: 6,
            sample: false
        }]
    );
    s.add(seq(2, (100..105).collect(), 3));
    let (p, _) = step(&mut s, 7);
    assert_eq!(
        p.chunks[0],
        ScheduledChunk {
            id: 1,
            start: 6,
            len: 4,
            sample: true
        }
    );
    assert_eq!(
        p.chunks[1],
        ScheduledChunk {
            id: 2,
            start: 0,
            len: 2,
            sample: false
        }
    );
    let (p, _) = step(&mut s, 7);
    assert_eq!(
        p.chunks[0],
        ScheduledChunk {
            id: 1,
            start: 10,
            len: 1,
            sample: true
        },
        "decode first"
    );
    assert_eq!(p.num_tokens(), 1 + 3);
}

#[test]
fn max_num_seqs_caps_running() {
    let mut s = sched(64, 2, 100);
    for id in 0..3 {
        s.add(seq(id, vec![id as u32; 3], 2));
    }
    let (p, _) = step(&mut s, 1);
    assert_eq!(p.chunks.len(), 2);
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn shared_prefix_reuses_blocks_and_computes_only_the_rest() {
    let mut s = sched(64, 8, 100);
    let prompt: Vec<u32> = (0..13).collect();
    s.add(seq(1, prompt.clone(), 5));
    step(&mut s, 0);
    let mut second = prompt[..12].to_vec();
    second.extend([50, 51, 52]);
    s.add(seq(2, second, 5));
    let (p, _) = step(&mut s, 0);
    let hit = ScheduledChunk {
        id: 2,
        start: 12,
        len: 3,
        sample: true,
    };
    assert_eq!(p.chunks[1], hit, "only the 3 uncached tokens are computed");
    // The hit is the very same blocks, now held by both sequences.
    let first_blocks = s.get(1).unwrap().block_table()[..3].to_vec();
    assert_eq!(s.get(2).unwrap().block_table()[..3], first_blocks[..]);
    assert!(first_blocks.iter().all(|&b| s.kv_cache().ref_count(b) == 2));
    let stats = s.kv_cache().prefix_cache_stats();
    assert_eq!((stats.queries, stats.hits), (13 + 15, 12));
    check_ref_counts(&s);
}

#[test]
fn an_identical_prompt_still_recomputes_its_last_token() {
    let mut s = sched(64, 8, 100);
    s.add(seq(1, (0..8).collect(), 1));
    step(&mut s, 0);
    s.add(seq(2, (0..8).collect(), 1));
    let (p, _) = step(&mut s, 0);
    assert_eq!(
        p.chunks,
        vec![ScheduledChunk {
            id: 2,
            start: 4,
            len: 4,
            sample: true
        }]
    );
}

#[test]
fn running_out_of_blocks_preempts_the_newest_and_finishes_everything() {
    // 4 blocks of 4 tokens; two sequences each wanting 12 tokens in the end.
    let mut s = sched(4, 8, 100);
    s.add(seq(1, vec![1; 4], 8));
    s.add(seq(2, vec![2; 4], 8));
    let mut finished = Vec::new();
    let mut preemptions = 0;
    for _ in 0..100 {
        let (p, done) = step(&mut s, 9);
        preemptions += p.preempted.len();
        finished.extend(done);
        check_ref_counts(&s);
        if !s.has_unfinished() {
            break;
        }
    }
    finished.sort();
    assert_eq!(finished, vec![1, 2], "nobody is dropped");
    assert!(preemptions > 0, "the pool was too small for both at once");
    assert_eq!(s.kv_cache().num_free_blocks(), 4);
}

#[derive(Clone, Debug)]
enum Op {
    Add {
        prompt_len: usize,
        shared: bool,
        max_tokens: usize,
    },
    Step,
    Abort(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..20, any::<bool>(), 1usize..6).prop_map(|(prompt_len, shared, max_tokens)| {
            Op::Add {
                prompt_len,
                shared,
                max_tokens,
            }
        }),
        Just(Op::Step),
        Just(Op::Step),
        (0usize..8).prop_map(Op::Abort),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random add / step / abort sequences keep the pool consistent, finish
    /// every request that is not aborted, and leave nothing held when idle.
    #[test]
    fn pool_and_scheduler_invariants(ops in proptest::collection::vec(op(), 1..60), budget in 3usize..24) {
        let mut s = sched(12, 4, budget);
        let mut next_id = 0;
        let mut live: Vec<SeqId> = Vec::new();
        for op in ops {
            match op {
                Op::Add { prompt_len, shared, max_tokens } => {
                    // Shared prompts start with the same tokens, so they hit the prefix cache.
                    let prompt: Vec<u32> = (0..prompt_len).map(|i| if shared { i as u32 } else { 1000 + next_id as u32 * 50 + i as u32 }).collect();
                    if prompt_len + max_tokens <= 12 * 4 {
                        s.add(seq(next_id, prompt, max_tokens));
                        live.push(next_id);
                        next_id += 1;
                    }
                }
                Op::Step => {
                    let (_, done) = step(&mut s, 3);
                    live.retain(|id| !done.contains(id));
                }
                Op::Abort(k) => {
                    if !live.is_empty() {
                        let id = live.remove(k % live.len());
                        prop_assert!(s.finish(id, FinishReason::Abort).is_some());
                    }
                }
            }
            check_ref_counts(&s);
        }
        for _ in 0..500 {
            if !s.has_unfinished() { break; }
            step(&mut s, 3);
            check_ref_counts(&s);
        }
        prop_assert!(!s.has_unfinished(), "every request finishes");
        prop_assert_eq!(s.kv_cache().num_free_blocks(), s.kv_cache().num_blocks());
    }
}

fn remote_seq(id: SeqId, prompt: Vec<u32>, first: u32, remote_blocks: Vec<u32>) -> Sequence {
    let remote = KvHandle {
        agent: Default::default(),
        lease: 7,
        num_tokens: prompt.len(),
        block_checksums: remote_blocks
            .iter()
            .map(|&b| BlockChecksum(b.into()))
            .collect(),
        block_ids: remote_blocks.into_iter().map(BlockId).collect(),
        block_hashes: Vec::new(),
    };
    let handoff = KvHandoff::Load {
        output_tokens: vec![first],
        remote,
    };
    seq_with(id, prompt, 4, handoff)
}

#[test]
fn a_remote_prompt_pulls_only_the_blocks_not_cached_here() {
    let mut s = sched(16, 4, 64);
    // A local request caches the first two blocks of the prompt (8 tokens).
    s.add(seq(1, (1..=9).collect(), 1));
    while s.has_unfinished() {
        step(&mut s, 99);
    }
    // 10 prompt tokens = 3 blocks remotely (100, 101, 102).
    s.add(remote_seq(2, (1..=10).collect(), 50, vec![100, 101, 102]));
    let plan = s.schedule();
    assert!(plan.is_empty(), "nothing runs until the KV landed");
    let loads = s.take_kv_loads();
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].reused_blocks, 2);
    let seq2 = s.get(2).unwrap();
    assert_eq!(
        loads[0].pairs,
        vec![BlockPair {
            remote: BlockId(102),
            local: seq2.block_table()[2],
            checksum: BlockChecksum(102),
        }]
    );
    assert_eq!(seq2.status(), SeqStatus::LoadingKv);
    s.kv_loaded(2, true);
    // Decoding resumes at the first token sampled remotely.
    let (plan, _) = step(&mut s, 51);
    assert_eq!(
        plan.chunks,
        vec![ScheduledChunk {
            id: 2,
            start: 10,
            len: 1,
            sample: true
        }]
    );
    check_ref_counts(&s);
}

#[test]
fn a_remote_prompt_cached_here_in_full_decodes_at_once() {
    let mut s = sched(16, 4, 64);
    s.add(seq(1, (1..=9).collect(), 1));
    while s.has_unfinished() {
        step(&mut s, 99);
    }
    // 8 prompt tokens = 2 full blocks, both cached: nothing to pull.
    s.add(remote_seq(2, (1..=8).collect(), 50, vec![100, 101]));
    let (plan, _) = step(&mut s, 51);
    assert!(s.take_kv_loads().is_empty());
    assert_eq!(
        plan.chunks,
        vec![ScheduledChunk {
            id: 2,
            start: 8,
            len: 1,
            sample: true
        }]
    );
    assert_eq!(s.get(2).unwrap().num_cached_prompt_tokens(), 8);
    check_ref_counts(&s);
}

#[test]
fn a_failed_pull_computes_the_prompt_locally() {
    let mut s = sched(16, 4, 64);
    s.add(remote_seq(3, (1..=10).collect(), 50, vec![5, 6, 7]));
    assert!(s.schedule().is_empty());
    assert_eq!(s.take_kv_loads()[0].pairs.len(), 3);
    s.kv_loaded(3, false);
    let (plan, _) = step(&mut s, 51);
    // Prompt plus the remote first token, then the next token is sampled.
    assert_eq!(
        plan.chunks,
        vec![ScheduledChunk {
            id: 3,
            start: 0,
            len: 11,
            sample: true
        }]
    );
}

#[test]
fn aborting_mid_pull_frees_the_blocks_only_when_the_pull_ends() {
    let mut s = sched(8, 4, 64);
    s.add(remote_seq(4, (1..=10).collect(), 50, vec![5, 6, 7]));
    s.schedule();
    s.take_kv_loads();
    let free_before = s.kv_cache().num_free_blocks();
    s.finish(4, FinishReason::Abort);
    assert_eq!(
        s.kv_cache().num_free_blocks(),
        free_before,
        "the transfer may still write them"
    );
    s.kv_loaded(4, true);
    assert_eq!(s.kv_cache().num_free_blocks(), 8);
}

#[test]
fn a_detached_prefill_keeps_its_blocks_until_released() {
    let mut s = sched(8, 4, 64);
    s.add(seq(5, (1..=10).collect(), 4));
    step(&mut s, 9);
    let handle = s.detach(5, vec![BlockChecksum(1); 3]).unwrap();
    assert_eq!(
        (handle.lease, handle.block_ids.len(), handle.num_tokens),
        (5, 3, 10)
    );
    let prompt: Vec<u32> = (1..=10).collect();
    assert_eq!(
        handle.block_hashes,
        block_hashes(&prompt[..8], 4),
        "the two full blocks"
    );
    assert_eq!(s.kv_cache().num_free_blocks(), 5);
    assert_eq!(s.kv_cache().num_leases(), 1);
    assert!(s.release_lease(5));
    assert!(!s.release_lease(5), "released once");
    assert_eq!(s.kv_cache().num_free_blocks(), 8);
    assert!(!s.has_unfinished());
}
