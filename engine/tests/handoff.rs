//! Prefill → decode handoff between two engine cores in one process, with
//! the test as the transfer layer (it copies blocks between the arenas):
//! a faithful pull decodes what a colocated engine decodes without
//! recomputing the prompt, and a pull that read blocks reused by another
//! prompt after the lease expired is caught by the block checksums — the
//! decode engine computes the prompt itself and still answers right.

use candle_core::DType;
use tandem_engine::demo::{write_demo_model, DemoSize};
use tandem_engine::engine_core::EngineCore;
use tandem_engine::kv_cache::KvCache;
use tandem_engine::kv_handoff::{KvHandle, KvLoad};
use tandem_engine::sampler::SamplingParams;
use tandem_engine::scheduler::SchedulerConfig;
use tandem_engine::sequence::{KvHandoff, Request, SeqId, StopConditions};
use tandem_engine::{EngineOptions, LoadedModel};

const BLOCK_SIZE: usize = 16;
const NUM_BLOCKS: usize = 3;
const MAX_TOKENS: usize = 6;

fn tiny_model() -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    write_demo_model(dir.path(), DemoSize::Tiny, 0).unwrap();
    let model = LoadedModel::load(dir.path(), DType::F32).unwrap();
    (dir, model)
}

/// A core over `NUM_BLOCKS` blocks (one prompt's worth) without prefix
/// caching, so the next prompt reuses every block a lease freed.
fn core(model: &LoadedModel) -> EngineCore {
    let bytes = NUM_BLOCKS * KvCache::bytes_per_block(&model.config, BLOCK_SIZE, DType::F32);
    model
        .build_core(&EngineOptions {
            scheduler: SchedulerConfig {
                max_num_seqs: 4,
                max_num_batched_tokens: 256,
                block_size: BLOCK_SIZE,
                enable_prefix_caching: false,
            },
            kv_cache_memory: Some(bytes),
            ..EngineOptions::default()
        })
        .unwrap()
}

fn request(prompt: Vec<u32>, handoff: KvHandoff) -> Request {
    Request {
        prompt_tokens: prompt,
        params: SamplingParams::greedy(),
        stop: StopConditions {
            max_tokens: MAX_TOKENS,
            ignore_eos: true,
            ..Default::default()
        },
        handoff,
    }
}

/// Steps until sequence `id` finishes; its tokens and every prompt token
/// the engine computed on the way.
fn run(core: &mut EngineCore, id: SeqId) -> (Vec<u32>, usize) {
    let mut tokens = Vec::new();
    let mut prefill_tokens = 0;
    for _ in 0..100 {
        let before = core.scheduler().get(id).map(|s| s.num_computed());
        let outputs = core.step().unwrap();
        if let (Some(before), Some(seq)) = (before, core.scheduler().get(id)) {
            prefill_tokens += seq.num_computed().saturating_sub(before).saturating_sub(1);
        }
        for o in outputs.into_iter().filter(|o| o.id == id) {
            tokens.push(o.token.token);
            if o.finished.is_some() {
                return (tokens, prefill_tokens);
            }
        }
    }
    panic!("sequence {id} did not finish");
}

/// Prefills `prompt` on `core` and returns the first token and the lease.
fn prefill(core: &mut EngineCore, id: SeqId, prompt: &[u32]) -> (u32, KvHandle) {
    core.add_request(id, request(prompt.to_vec(), KvHandoff::Hold))
        .unwrap();
    for _ in 0..10 {
        for o in core.step().unwrap() {
            if let Some(handle) = o.handoff {
                return (o.token.token, handle);
            }
        }
    }
    panic!("no handoff for {id}");
}

/// The transfer layer: copies each pulled block's bytes from `from`'s
/// arena into `to`'s.
fn copy_blocks(from: &EngineCore, to: &EngineCore, load: &KvLoad) {
    let (src, dst) = (
        from.runner().host_kv_cache().unwrap(),
        to.runner().host_kv_cache().unwrap(),
    );
    let bytes = src.block_bytes();
    for pair in &load.pairs {
        // SAFETY: both blocks are inside their arenas (ids the engines
        // handed out), the arenas do not overlap, and no step runs while
        // this copies (this thread drives both engines).
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.host_ptr().add(pair.remote.index() * bytes),
                dst.host_ptr().add(pair.local.index() * bytes),
                bytes,
            );
        }
    }
}

/// What a colocated engine generates for `prompt` (the reference).
fn colocated(model: &LoadedModel, prompt: &[u32]) -> Vec<u32> {
    let mut core = core(model);
    core.add_request(9, request(prompt.to_vec(), KvHandoff::None))
        .unwrap();
    run(&mut core, 9).0
}

fn prompt(seed: u32) -> Vec<u32> {
    (0..40).map(|i| 3 + (i * 7 + seed * 13) % 200).collect()
}

/// Decodes `handle`'s prompt on `decode` after pulling its blocks from
/// `prefill` as they are now.
fn decode_after(
    decode: &mut EngineCore,
    prefill: &EngineCore,
    prompt: &[u32],
    first: u32,
    handle: KvHandle,
) -> (Vec<u32>, usize) {
    let handoff = KvHandoff::Load {
        output_tokens: vec![first],
        remote: handle,
    };
    decode
        .add_request(1, request(prompt.to_vec(), handoff))
        .unwrap();
    assert!(
        decode.step().unwrap().is_empty(),
        "nothing runs before the pull"
    );
    let loads = decode.take_kv_loads();
    assert_eq!(loads.len(), 1);
    copy_blocks(prefill, decode, &loads[0]);
    decode.kv_loaded(1, Ok(()));
    let (rest, prefilled) = run(decode, 1);
    ([vec![first], rest].concat(), prefilled)
}

#[test]
fn a_faithful_pull_decodes_as_colocated_without_recomputing() {
    let (_dir, model) = tiny_model();
    let a = prompt(1);
    let expected = colocated(&model, &a);

    let (mut pre, mut dec) = (core(&model), core(&model));
    let (first, handle) = prefill(&mut pre, 5, &a);
    assert_eq!(handle.block_checksums.len(), handle.block_ids.len());
    let (got, prefilled) = decode_after(&mut dec, &pre, &a, first, handle);
    assert_eq!(got, expected);
    assert_eq!(prefilled, 0, "the pulled KV was used");
    assert_eq!(dec.stats().num_kv_pulls_discarded, 0);
}

#[test]
fn a_pull_of_blocks_reused_after_the_lease_expired_is_recomputed() {
    let (_dir, model) = tiny_model();
    let (a, b) = (prompt(1), prompt(2));
    let expected = colocated(&model, &a);

    let (mut pre, mut dec) = (core(&model), core(&model));
    let (first, handle) = prefill(&mut pre, 5, &a);
    // A's lease expires before the stalled pull reads; B is prefilled into
    // the blocks it freed.
    assert!(pre.release_lease(handle.lease));
    let (_, b_handle) = prefill(&mut pre, 6, &b);
    let sorted = |h: &KvHandle| {
        let mut ids = h.block_ids.clone();
        ids.sort();
        ids
    };
    assert_eq!(sorted(&b_handle), sorted(&handle), "B reused A's blocks");
    let (got, prefilled) = decode_after(&mut dec, &pre, &a, first, handle);
    assert_eq!(got, expected, "decoded from A's tokens, not B's KV");
    assert_eq!(prefilled, a.len(), "the prompt was computed here");
    assert_eq!(dec.stats().num_kv_pulls_discarded, 1);
}

#[test]
fn a_handle_without_checksums_is_refused() {
    let (_dir, model) = tiny_model();
    let a = prompt(1);
    let mut pre = core(&model);
    let (first, mut handle) = prefill(&mut pre, 5, &a);
    handle.block_checksums.pop();
    let handoff = KvHandoff::Load {
        output_tokens: vec![first],
        remote: handle,
    };
    let e = core(&model)
        .add_request(1, request(a, handoff))
        .unwrap_err();
    assert!(e.to_string().contains("3 KV blocks"), "{e}");
}
