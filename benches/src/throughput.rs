//! `tandem-bench throughput`: offline serving throughput of the engine
//! (scheduler + continuous batching) on the Qwen2.5-0.5B-shaped random model
//! at several `max_num_seqs`, and time-to-first-token with a 90 % shared,
//! cached prefix against an uncached prompt of the same length.

use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

use tandem_engine::engine_core::EngineCore;
use tandem_engine::models::CausalLm;
use tandem_engine::offline::{generate, GenerateRequest, OfflineOptions};
use tandem_engine::runner::{DeviceSpec, KvBudget, ModelRunner, RunnerOptions};
use tandem_engine::sampler::SamplingParams;
use tandem_engine::scheduler::SchedulerConfig;
use tandem_engine::sequence::{Request, StopConditions};

use crate::random_model;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    max_num_seqs: Vec<usize>,
    #[arg(long, default_value_t = 200)]
    num_prompts: usize,
    /// Prompts for `max_num_seqs` 1 (one at a time is slow; say how many).
    #[arg(long, default_value_t = 200)]
    num_prompts_serial: usize,
    #[arg(long, default_value_t = 256)]
    input_len: usize,
    #[arg(long, default_value_t = 128)]
    output_len: usize,
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Prompt length of the prefix-cache TTFT test (90 % of it shared).
    #[arg(long, default_value_t = 1024)]
    prefix_prompt_len: usize,
    #[arg(long, default_value = "/tmp/tandem-bench-qwen25-05b")]
    model_dir: PathBuf,
    #[arg(long, default_value = "throughput-bench.json")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Row {
    max_num_seqs: usize,
    num_prompts: usize,
    seconds: f64,
    output_tok_s: f64,
    total_tok_s: f64,
}

#[derive(Serialize)]
struct PrefixTtft {
    prompt_len: usize,
    shared_len: usize,
    ttft_cold_ms: f64,
    ttft_cached_ms: f64,
    speedup: f64,
}

#[derive(Serialize)]
struct Report {
    model: &'static str,
    dtype: String,
    input_len: usize,
    output_len: usize,
    rows: Vec<Row>,
    prefix: PrefixTtft,
}

fn random_tokens(rng: &mut impl Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = random_model::ensure(&args.model_dir)?;
    let model = random_model::load(
        &args.model_dir,
        &cfg,
        tandem_engine::parse_dtype(&args.dtype)?,
    )?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut rows = Vec::new();
    for &seqs in &args.max_num_seqs {
        let n = if seqs == 1 {
            args.num_prompts_serial
        } else {
            args.num_prompts
        };
        let requests: Vec<GenerateRequest> = (0..n)
            .map(|_| GenerateRequest {
                prompt_tokens: random_tokens(&mut rng, args.input_len, cfg.vocab_size),
                params: SamplingParams::greedy(),
                max_tokens: args.output_len,
                ignore_eos: true,
            })
            .collect();
        let opts = OfflineOptions {
            max_num_seqs: seqs,
            device: args.device,
            ..OfflineOptions::default()
        };
        let t = Instant::now();
        let (_, stats) = generate(&model, &[], &requests, &opts)?;
        let secs = t.elapsed().as_secs_f64();
        let row = Row {
            max_num_seqs: seqs,
            num_prompts: n,
            seconds: secs,
            output_tok_s: stats.generated_tokens as f64 / secs,
            total_tok_s: (stats.generated_tokens + stats.prompt_tokens) as f64 / secs,
        };
        eprintln!(
            "max_num_seqs {seqs}: {n} prompts in {secs:.1}s, {:.1} output tok/s",
            row.output_tok_s
        );
        rows.push(row);
    }
    let prefix = prefix_ttft(
        &model,
        args.device,
        &mut rng,
        args.prefix_prompt_len,
        cfg.vocab_size,
    )?;
    eprintln!(
        "TTFT at {} tokens: cold {:.0} ms, 90% cached {:.0} ms ({:.1}x)",
        prefix.prompt_len, prefix.ttft_cold_ms, prefix.ttft_cached_ms, prefix.speedup
    );
    let report = Report {
        model: "Qwen2.5-0.5B-shaped, random weights",
        dtype: args.dtype.clone(),
        input_len: args.input_len,
        output_len: args.output_len,
        rows,
        prefix,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    let summary: Vec<String> = report
        .rows
        .iter()
        .map(|r| format!("seqs {} {:.1} tok/s", r.max_num_seqs, r.output_tok_s))
        .collect();
    println!(
        "throughput: {} | prefix TTFT {:.0} -> {:.0} ms ({:.1}x) | json {}",
        summary.join(", "),
        report.prefix.ttft_cold_ms,
        report.prefix.ttft_cached_ms,
        report.prefix.speedup,
        args.out.display()
    );
    Ok(())
}

/// Median time to the first token of one `prompt`, on a warm engine.
fn ttft(core: &mut EngineCore, id: u64, prompt: Vec<u32>) -> anyhow::Result<f64> {
    let stop = StopConditions {
        max_tokens: 1,
        ignore_eos: true,
        ..Default::default()
    };
    let t = Instant::now();
    core.add_request(
        id,
        Request {
            prompt_tokens: prompt,
            params: SamplingParams::greedy(),
            stop,
            handoff: Default::default(),
        },
    )?;
    while core.has_unfinished() {
        core.step()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

fn prefix_ttft(
    model: &CausalLm,
    device: DeviceSpec,
    rng: &mut impl Rng,
    prompt_len: usize,
    vocab: usize,
) -> anyhow::Result<PrefixTtft> {
    let shared_len = prompt_len * 9 / 10;
    let config = SchedulerConfig {
        max_num_batched_tokens: prompt_len.max(2048),
        ..SchedulerConfig::default()
    };
    let blocks = 8 * prompt_len.div_ceil(config.block_size);
    let runner = ModelRunner::new(
        model,
        &RunnerOptions {
            device,
            kv: KvBudget::Blocks(blocks),
            block_size: config.block_size,
            max_num_batched_tokens: config.max_num_batched_tokens,
            max_num_seqs: config.max_num_seqs,
        },
    )?;
    let mut core = EngineCore::new(runner, Vec::new(), config, 0)?;
    let shared = random_tokens(rng, shared_len, vocab);
    let with_suffix = |rng: &mut dyn rand::RngCore| {
        let mut p = shared.clone();
        p.extend((shared_len..prompt_len).map(|_| rng.random_range(0..vocab as u32)));
        p
    };
    ttft(&mut core, 0, with_suffix(rng))?; // warm the cache with the prefix
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    for i in 0..3 {
        cold.push(ttft(
            &mut core,
            10 + i,
            random_tokens(rng, prompt_len, vocab),
        )?);
        cached.push(ttft(&mut core, 20 + i, with_suffix(rng))?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, h) = (median(&mut cold), median(&mut cached));
    Ok(PrefixTtft {
        prompt_len,
        shared_len,
        ttft_cold_ms: c,
        ttft_cached_ms: h,
        speedup: c / h,
    })
}
