//! `tandem-bench guided`: what guided decoding costs per decode step. In
//! one run, for each batch size: the decode step time unconstrained, the
//! step time with every sequence under a JSON schema (the engine computes
//! the masks beside the forward pass), and the mask computation alone (all
//! of a step's masks, in parallel as the engine does), on the same model
//! and vocabulary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;
use tandem_engine::guided::{GuidanceCompiler, Guide, GuidedDecoding};
use tandem_engine::offline::{generate, GenerateRequest, OfflineOptions};
use tandem_engine::sampler::SamplingParams;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An HF model directory or a GGUF file with its tokenizer (the
    /// default chat model, SmolLM2-135M-Instruct, when scripts/python_env.sh
    /// exported its path).
    #[arg(long, env = "TANDEM_SMOLLM2_GGUF")]
    model: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batch: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    /// Tokens per sequence; the schema is long enough that none ends first.
    #[arg(long, default_value_t = 64)]
    output_len: usize,
    /// Runs per configuration; the fastest is reported.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value = "guided-bench.json")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Row {
    batch: usize,
    unconstrained_step_ms: f64,
    guided_step_ms: f64,
    /// Added to each step by guided decoding, end to end.
    overhead_ms: f64,
    /// All of a step's masks computed in parallel, without the model.
    mask_ms_mean: f64,
    mask_ms_p99: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    vocab_size: usize,
    threads: usize,
    schema: serde_json::Value,
    rows: Vec<Row>,
}

/// Eight records of bounded fields: longer than any run's output, so every
/// sequence decodes `output_len` tokens under the grammar.
fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {"items": {"type": "array", "minItems": 8, "maxItems": 8, "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 24},
                "qty": {"type": "integer", "minimum": 0, "maximum": 999},
                "kind": {"enum": ["tool", "part", "food"]},
                "ok": {"type": "boolean"}},
            "required": ["name", "qty", "kind", "ok"],
            "additionalProperties": false}}},
        "required": ["items"],
        "additionalProperties": false
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dtype = tandem_engine::parse_dtype(&args.dtype)?;
    let loaded = tandem_engine::LoadedModel::load(&args.model, dtype)?;
    let vocab = loaded.config.vocab_size;
    let compiler = Arc::new(GuidanceCompiler::new(
        loaded.tokenizer.clone(),
        vocab,
        &loaded.eos_token_ids,
    ));
    let spec = GuidedDecoding::JsonSchema(schema());
    compiler.compile(&spec)?; // the trie and the grammar, outside the timings
    let mut rows = Vec::new();
    for &batch in &args.batch {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(batch as u64);
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|_| {
                (0..args.prompt_len)
                    .map(|_| rng.random_range(0..vocab as u32))
                    .collect()
            })
            .collect();
        let requests = |guided: Option<&GuidedDecoding>| -> Vec<GenerateRequest> {
            prompts
                .iter()
                .map(|p| GenerateRequest {
                    prompt_tokens: p.clone(),
                    params: SamplingParams {
                        guided: guided.cloned(),
                        ..SamplingParams::greedy()
                    },
                    max_tokens: args.output_len,
                    ignore_eos: true,
                })
                .collect()
        };
        let opts = OfflineOptions {
            guidance: Some(compiler.clone()),
            ..OfflineOptions::default()
        };
        let step_ms = |requests: &[GenerateRequest]| -> anyhow::Result<f64> {
            let (_, stats) = generate(&loaded.model, &loaded.eos_token_ids, requests, &opts)?;
            Ok(stats.decode_time.as_secs_f64() * 1e3 / stats.decode_steps.max(1) as f64)
        };
        // Alternated, best of each: both see the same machine state.
        let (plain, constrained) = (requests(None), requests(Some(&spec)));
        let (mut unconstrained, mut guided) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..args.repeats.max(1) {
            unconstrained = unconstrained.min(step_ms(&plain)?);
            guided = guided.min(step_ms(&constrained)?);
        }
        let masks = mask_times(&compiler, &spec, batch, args.output_len, vocab)?;
        let row = Row {
            batch,
            unconstrained_step_ms: unconstrained,
            guided_step_ms: guided,
            overhead_ms: guided - unconstrained,
            mask_ms_mean: masks.iter().sum::<f64>() / masks.len() as f64,
            mask_ms_p99: percentile(&masks, 0.99),
        };
        eprintln!(
            "batch {batch}: step {:.2} ms unconstrained, {:.2} ms guided (+{:.2} ms); \
             masks alone {:.3} ms mean, {:.3} ms p99",
            row.unconstrained_step_ms,
            row.guided_step_ms,
            row.overhead_ms,
            row.mask_ms_mean,
            row.mask_ms_p99
        );
        rows.push(row);
    }
    let report = Report {
        model: args.model.display().to_string(),
        vocab_size: vocab,
        threads: rayon::current_num_threads(),
        schema: schema(),
        rows,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    let summary: Vec<String> = report
        .rows
        .iter()
        .map(|r| {
            format!(
                "b{} {:.2}→{:.2} ms/step (masks {:.3} ms)",
                r.batch, r.unconstrained_step_ms, r.guided_step_ms, r.mask_ms_mean
            )
        })
        .collect();
    println!(
        "guided: {} | json {}",
        summary.join(", "),
        args.out.display()
    );
    Ok(())
}

/// Milliseconds per step to compute `batch` masks in parallel, each guide
/// then taking a random allowed token, for `steps` steps.
fn mask_times(
    compiler: &GuidanceCompiler,
    spec: &GuidedDecoding,
    batch: usize,
    steps: usize,
    vocab: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut guides: Vec<(Guide, rand_chacha::ChaCha8Rng)> = (0..batch)
        .map(|i| {
            Ok((
                compiler.compile(spec)?,
                rand_chacha::ChaCha8Rng::seed_from_u64(i as u64),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut times = Vec::with_capacity(steps);
    let mut logits = vec![vec![0f32; vocab]; batch];
    for _ in 0..steps {
        let t = Instant::now();
        guides.par_iter_mut().for_each(|(g, _)| g.prepare());
        times.push(t.elapsed().as_secs_f64() * 1e3);
        for ((g, rng), row) in guides.iter_mut().zip(&mut logits) {
            row.fill(0.0);
            g.apply(row);
            let allowed: Vec<u32> = (0..vocab as u32)
                .filter(|&i| row[i as usize] == 0.0)
                .collect();
            if let Some(&tok) = allowed.get(rng.random_range(0..allowed.len().max(1))) {
                g.consume(tok);
            }
        }
    }
    Ok(times)
}

fn percentile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}
