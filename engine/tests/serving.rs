//! The serving engine end to end on the tiny demo model: batching does not
//! change tokens, preemption does not either, prefix hits are reported,
//! stop strings cut text, and a dropped stream frees its blocks.

use std::time::Duration;

use candle_core::DType;
use tandem_engine::demo::{write_demo_model, DemoSize};
use tandem_engine::kv_cache::KvEvent;
use tandem_engine::sampler::SamplingParams;
use tandem_engine::scheduler::SchedulerConfig;
use tandem_engine::sequence::{FinishReason, Request, StopConditions};
use tandem_engine::serving::{EngineHandle, RequestOutput, ServingRequest, StopReason};
use tandem_engine::{EngineOptions, LoadedModel};

fn tiny_model() -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    write_demo_model(dir.path(), DemoSize::Tiny, 0).unwrap();
    let model = LoadedModel::load(dir.path(), DType::F32).unwrap();
    (dir, model)
}

fn engine(model: &LoadedModel, num_blocks: usize, max_num_seqs: usize) -> EngineHandle {
    let block_size = 16;
    let bytes = num_blocks
        * tandem_engine::kv_cache::KvCache::bytes_per_block(&model.config, block_size, DType::F32);
    let scheduler = SchedulerConfig {
        max_num_seqs,
        max_num_batched_tokens: 256,
        block_size,
        enable_prefix_caching: true,
    };
    model
        .start_engine(&EngineOptions {
            scheduler,
            kv_cache_memory: Some(bytes),
            ..EngineOptions::default()
        })
        .unwrap()
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> ServingRequest {
    let stop = StopConditions {
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    };
    ServingRequest::new(Request {
        prompt_tokens: prompt,
        params: SamplingParams::greedy(),
        stop,
        handoff: Default::default(),
    })
}

/// Collects a request's updates into (tokens, text, last update).
fn collect(engine: &EngineHandle, req: ServingRequest) -> (Vec<u32>, String, RequestOutput) {
    let mut stream = engine.add_request(req);
    let (mut tokens, mut text, mut last) = (Vec::new(), String::new(), None);
    while let Some(update) = stream.blocking_next() {
        let update = update.expect("request succeeds");
        tokens.extend(&update.token_ids);
        text.push_str(&update.text);
        last = Some(update);
    }
    (tokens, text, last.expect("at least one update"))
}

/// Submits every prompt before reading any output, so they share steps.
fn all_at_once(engine: &EngineHandle, prompts: &[Vec<u32>], max_tokens: usize) -> Vec<Vec<u32>> {
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| engine.add_request(greedy(p.clone(), max_tokens)))
        .collect();
    streams
        .into_iter()
        .map(|mut stream| {
            let mut tokens = Vec::new();
            while let Some(u) = stream.blocking_next() {
                tokens.extend(u.unwrap().token_ids);
            }
            tokens
        })
        .collect()
}

fn prompts(model: &LoadedModel, n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            let text = format!(
                "Request {i}: {}",
                "the quick brown fox jumps over the lazy dog ".repeat(1 + i % 5)
            );
            model.tokenizer.encode(&text, false).unwrap()
        })
        .collect()
}

#[test]
fn thirty_two_requests_together_match_each_alone() {
    let (_dir, model) = tiny_model();
    let handle = engine(&model, 512, 64);
    let prompts = prompts(&model, 32);
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| collect(&handle, greedy(p.clone(), 24)).0)
        .collect();
    let together = all_at_once(&handle, &prompts, 24);
    for (i, tokens) in together.iter().enumerate() {
        assert_eq!(tokens, &alone[i], "request {i} changed when batched");
    }
}

#[test]
fn preemption_by_recompute_keeps_tokens_identical() {
    let (_dir, model) = tiny_model();
    let prompts = prompts(&model, 12);
    let roomy = engine(&model, 512, 64);
    let expected: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| collect(&roomy, greedy(p.clone(), 40)).0)
        .collect();
    // 12 blocks of 16 tokens: any two long requests cannot grow together.
    let tight = engine(&model, 12, 64);
    let together = all_at_once(&tight, &prompts, 40);
    for (i, tokens) in together.iter().enumerate() {
        assert_eq!(tokens, &expected[i], "request {i} changed under preemption");
    }
    wait_idle(&tight);
    assert!(
        tight.stats().num_preemptions > 0,
        "the tight cache must have preempted"
    );
}

#[test]
fn shared_prefix_is_served_from_cache() {
    let (_dir, model) = tiny_model();
    let handle = engine(&model, 256, 8);
    let mut events = handle.subscribe_kv_events();
    let shared: Vec<u32> = model
        .tokenizer
        .encode(&"a long shared system prompt ".repeat(12), false)
        .unwrap();
    assert!(shared.len() >= 48);
    let mut first = shared.clone();
    first.extend(model.tokenizer.encode(" first question", false).unwrap());
    let mut second = shared.clone();
    second.extend(model.tokenizer.encode(" second one", false).unwrap());
    let (_, _, a) = collect(&handle, greedy(first, 4));
    assert_eq!(a.usage.cached_tokens, 0);
    let (_, _, b) = collect(&handle, greedy(second, 4));
    // Only full blocks of the shared part can hit.
    assert_eq!(b.usage.cached_tokens, shared.len() / 16 * 16);
    let stats = handle.stats().prefix_cache;
    assert_eq!(stats.hits as usize, b.usage.cached_tokens);
    let mut stored = 0;
    while let Ok(e) = events.try_recv() {
        if let KvEvent::BlockStored { hashes, .. } = e {
            stored += hashes.len();
        }
    }
    assert!(stored >= shared.len() / 16, "stored blocks were published");
}

#[test]
fn stop_string_cuts_the_text_and_finishes_with_stop() {
    let (_dir, model) = tiny_model();
    let handle = engine(&model, 256, 8);
    let prompt = prompts(&model, 1).remove(0);
    let (_, full, _) = collect(&handle, greedy(prompt.clone(), 32));
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "need some text: {full:?}");
    let stop: String = chars[8..11].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    let mut req = greedy(prompt, 32);
    req.stop_strings = vec![stop.clone()];
    let (_, text, last) = collect(&handle, req);
    assert_eq!(text, cut, "text ends right before the stop string {stop:?}");
    assert_eq!(last.finish_reason, Some(FinishReason::Stop));
    assert_eq!(last.stop_reason, Some(StopReason::Text(stop.clone())));
    // Before min_tokens, stop strings do not count (as in vLLM).
    let mut req = greedy(prompts(&model, 1).remove(0), 32);
    req.stop_strings = vec![stop];
    req.request.stop.min_tokens = 20;
    let (tokens, _, _) = collect(&handle, req);
    assert!(tokens.len() >= 20, "stopped after {} tokens", tokens.len());
}

#[test]
fn min_tokens_and_stop_token_ids() {
    let (_dir, model) = tiny_model();
    let handle = engine(&model, 256, 8);
    let prompt = prompts(&model, 1).remove(0);
    let (tokens, _, _) = collect(&handle, greedy(prompt.clone(), 16));
    let target = tokens[5];
    let first_at = tokens.iter().position(|&t| t == target).unwrap();
    let mut req = greedy(prompt.clone(), 16);
    req.request.stop.stop_token_ids = vec![target];
    let (got, _, last) = collect(&handle, req);
    assert_eq!(
        got,
        tokens[..=first_at].to_vec(),
        "stops on the stop id (which is kept)"
    );
    assert_eq!(last.finish_reason, Some(FinishReason::Stop));
    let mut req = greedy(prompt, 16);
    req.request.stop.stop_token_ids = vec![target];
    req.request.stop.min_tokens = 16;
    let (got, _, last) = collect(&handle, req);
    assert_eq!(got.len(), 16, "min_tokens suppresses the stop");
    assert_eq!(last.finish_reason, Some(FinishReason::Length));
}

#[test]
fn dropping_a_stream_aborts_and_frees_blocks() {
    let (_dir, model) = tiny_model();
    let handle = engine(&model, 256, 8);
    let prompt = prompts(&model, 1).remove(0);
    let mut stream = handle.add_request(greedy(prompt, 400));
    stream.blocking_next().unwrap().unwrap();
    // Stats trail the outputs by one publish; wait to see the blocks held.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handle.stats().kv_usage == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the running request holds no blocks"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(stream);
    wait_idle(&handle);
}

/// Stats are published after each step; wait until they show no running
/// request and no held block.
fn wait_idle(handle: &EngineHandle) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handle.stats().num_running > 0 || handle.stats().kv_usage > 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "blocks still held: {:?}",
            handle.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn impossible_requests_are_rejected_with_a_reason() {
    let (_dir, model) = tiny_model();
    let handle = engine(&model, 4, 8);
    let mut stream = handle.add_request(greedy(vec![1; 10], 100));
    let err = stream.blocking_next().unwrap().unwrap_err();
    assert!(err.to_string().contains("--kv-cache-memory"), "{err}");
    let mut bad = greedy(vec![1; 4], 4);
    bad.request.params.top_p = 1.5;
    let err = handle
        .add_request(bad)
        .blocking_next()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}

#[test]
fn liveness_ends_with_the_engine_thread() {
    let (_dir, model) = tiny_model();
    let handle = engine(&model, 16, 8);
    assert!(handle.is_alive());
    handle.shutdown();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handle.is_alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "engine thread did not stop"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = handle
        .add_request(greedy(vec![1, 2], 2))
        .blocking_next()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("shut down"), "{err}");
}

#[test]
fn timings_split_time_to_first_token() {
    let (_dir, model) = tiny_model();
    let handle = engine(&model, 64, 8);
    let (_, _, last) = collect(&handle, greedy(prompts(&model, 1).remove(0), 8));
    let t = last.timings.expect("the last update carries timings");
    assert!(t.queue + t.prefill <= t.time_to_first_token, "{t:?}");
    assert!(t.time_to_first_token <= t.e2e, "{t:?}");
    assert!(t.prefill > Duration::ZERO, "{t:?}");
}
