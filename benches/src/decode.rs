//! `tandem-bench decode`: decode tokens/s at batch 1 and 16 for a
//! Qwen2.5-0.5B-shaped random-weight model (or the model `--model` names: an
//! HF directory or a GGUF file), in f32 and bf16, beside the memory-bandwidth
//! floor (weight bytes ÷ measured bandwidth) of the same run.

use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::PathBuf;

use tandem_engine::offline::{generate, GenerateRequest, OfflineOptions};
use tandem_engine::sampler::SamplingParams;
use tandem_engine::DeviceSpec;

use crate::{alloc_count, membw, random_model};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batch: Vec<usize>,
    /// Compute dtypes to measure.
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16")]
    dtype: Vec<String>,
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    output_len: usize,
    /// Runs per configuration; the best is reported.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Where the random checkpoint is written (reused when present).
    #[arg(long, default_value = "/tmp/tandem-bench-qwen25-05b")]
    model_dir: PathBuf,
    /// A real model instead of the random one: an HF model directory or a
    /// `.gguf` file (dequantized at load into each `--dtype`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, cuda or cuda:N. On a GPU the host-memory floor does not apply
    /// and is left out (scripts/gpu_check.sh measures the HBM floor).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    #[arg(long, default_value = "decode-bench.json")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Row {
    dtype: String,
    batch: usize,
    decode_tok_s: f64,
    weight_bytes: u64,
    floor_tok_s_per_seq: Option<f64>,
    fraction_of_floor: Option<f64>,
    /// Heap allocations one decode step makes (the whole batch), and their
    /// bytes: (a run of `output_len` tokens − a run of 1) ÷ (`output_len` − 1).
    allocations_per_step: f64,
    alloc_bytes_per_step: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    device: String,
    parameters: u64,
    threads: usize,
    read_bandwidth_gb_s: f64,
    prompt_len: usize,
    output_len: usize,
    rows: Vec<Row>,
}

fn opts(device: DeviceSpec) -> OfflineOptions {
    OfflineOptions {
        device,
        ..OfflineOptions::default()
    }
}

/// Allocations and bytes per decode step, as the mean over a whole run less
/// a prefill-only run of the same requests.
struct PerStep {
    allocations: f64,
    bytes: f64,
}

fn allocations_per_step(
    model: &tandem_engine::models::CausalLm,
    requests: &[GenerateRequest],
    opts: &OfflineOptions,
) -> anyhow::Result<PerStep> {
    let run = |max_tokens: usize| {
        let reqs: Vec<GenerateRequest> = requests
            .iter()
            .map(|r| GenerateRequest {
                max_tokens,
                ..r.clone()
            })
            .collect();
        let (out, count) = alloc_count::counting(|| generate(model, &[], &reqs, opts));
        out.map(|_| count)
    };
    let steps = requests.first().map_or(1, |r| r.max_tokens).max(2);
    let (whole, prefill) = (run(steps)?, run(1)?);
    let decode = whole.since(prefill);
    Ok(PerStep {
        allocations: decode.allocations as f64 / (steps - 1) as f64,
        bytes: decode.bytes as f64 / (steps - 1) as f64,
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = match &args.model {
        Some(path) => tandem_engine::ModelMeta::load(path)?.config,
        None => random_model::ensure(&args.model_dir)?,
    };
    let bandwidth = membw::read_bandwidth(1 << 30, 5);
    eprintln!("read bandwidth: {:.1} GB/s", bandwidth / 1e9);
    let mut rows = Vec::new();
    for dtype_name in &args.dtype {
        let dtype = tandem_engine::parse_dtype(dtype_name)?;
        let model = match &args.model {
            Some(path) => tandem_engine::LoadedModel::load(path, dtype)?.model,
            None => random_model::load(&args.model_dir, &cfg, dtype)?,
        };
        let weight_bytes = cfg.num_parameters() * dtype.size_in_bytes() as u64;
        for &batch in &args.batch {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(batch as u64);
            let requests: Vec<GenerateRequest> = (0..batch)
                .map(|_| GenerateRequest {
                    prompt_tokens: (0..args.prompt_len)
                        .map(|_| rng.random_range(0..cfg.vocab_size as u32))
                        .collect(),
                    params: SamplingParams::greedy(),
                    max_tokens: args.output_len,
                    ignore_eos: true,
                })
                .collect();
            let mut best = 0f64;
            for _ in 0..args.repeats.max(1) {
                let (_, stats) = generate(&model, &[], &requests, &opts(args.device))?;
                best = best.max(stats.decode_tokens_per_second(batch));
            }
            let per_step = allocations_per_step(&model, &requests, &opts(args.device))?;
            // Each decode step streams every weight once, whatever the batch.
            let floor = (args.device == DeviceSpec::Cpu).then(|| bandwidth / weight_bytes as f64);
            let row = Row {
                dtype: dtype_name.clone(),
                batch,
                decode_tok_s: best,
                weight_bytes,
                floor_tok_s_per_seq: floor,
                fraction_of_floor: floor.map(|f| best / batch as f64 / f),
                allocations_per_step: per_step.allocations,
                alloc_bytes_per_step: per_step.bytes,
            };
            eprintln!(
                "{dtype_name} batch {batch}: {:.0} heap allocations ({:.1} MiB) per decode step",
                per_step.allocations,
                per_step.bytes / (1 << 20) as f64
            );
            match floor {
                Some(f) => eprintln!(
                    "{dtype_name} batch {batch}: {best:.1} tok/s ({:.0}% of floor {f:.1} tok/s per sequence)",
                    best / batch as f64 / f * 100.0
                ),
                None => eprintln!("{dtype_name} batch {batch} on {}: {best:.1} tok/s", args.device),
            }
            rows.push(row);
        }
    }
    let report = Report {
        model: match &args.model {
            Some(path) => path.display().to_string(),
            None => "Qwen2.5-0.5B-shaped, random weights".into(),
        },
        device: args.device.to_string(),
        parameters: cfg.num_parameters(),
        threads: rayon::current_num_threads(),
        read_bandwidth_gb_s: bandwidth / 1e9,
        prompt_len: args.prompt_len,
        output_len: args.output_len,
        rows,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    let summary: Vec<String> = report
        .rows
        .iter()
        .map(|r| {
            let floor = r
                .fraction_of_floor
                .map(|f| format!(" ({:.0}% floor)", f * 100.0))
                .unwrap_or_default();
            format!(
                "{} b{} {:.1} tok/s{floor}",
                r.dtype, r.batch, r.decode_tok_s
            )
        })
        .collect();
    println!(
        "decode: {} | bandwidth {:.1} GB/s | json {}",
        summary.join(", "),
        report.read_bandwidth_gb_s,
        args.out.display()
    );
    Ok(())
}
