//! `tandem generate`: offline batch generation from the command line.

use anyhow::{bail, Context};
use std::path::PathBuf;

use tandem_engine::offline::{GenerateRequest, OfflineOptions};
use tandem_engine::sampler::SamplingParams;
use tandem_engine::{parse_dtype, DeviceSpec, LoadedModel};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hugging Face model directory (see `tandem demo-model`) or a GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// A prompt; repeat the flag for several prompts (run as one batch).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// A file with one prompt per line (blank lines skipped).
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    /// A file with one prompt per line as a JSON array of token ids (for
    /// exact prompt lengths; the `prompt` field of --json output is empty).
    #[arg(long)]
    prompt_ids_file: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Compute dtype: f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Where the model runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Let the tokenizer add its special tokens (e.g. BOS) to each prompt.
    #[arg(long)]
    add_special_tokens: bool,
    /// Print one JSON object per prompt instead of text.
    #[arg(long)]
    json: bool,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Most tokens in one forward step (longer prompts are prefilled in chunks).
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: usize,
    /// Most sequences in one forward step.
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
}

#[derive(serde::Serialize)]
struct JsonOutput<'a> {
    prompt: &'a str,
    text: String,
    token_ids: &'a [u32],
    finish_reason: tandem_engine::offline::FinishReason,
}

fn read_prompts(args: &Args) -> anyhow::Result<Vec<String>> {
    let mut prompts = args.prompts.clone();
    if let Some(f) = &args.prompts_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading --prompts-file {}", f.display()))?;
        prompts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    if prompts.is_empty() && args.prompt_ids_file.is_none() {
        bail!("no prompts: pass --prompt TEXT (repeatable), --prompts-file FILE or --prompt-ids-file FILE");
    }
    Ok(prompts)
}

fn read_prompt_ids(args: &Args) -> anyhow::Result<Vec<Vec<u32>>> {
    let Some(f) = &args.prompt_ids_file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(f)
        .with_context(|| format!("reading --prompt-ids-file {}", f.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!(
                    "line {} of --prompt-ids-file is not a JSON array of token ids",
                    i + 1
                )
            })
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut prompts = read_prompts(&args)?;
    let ids = read_prompt_ids(&args)?;
    let model = LoadedModel::load(&args.model, parse_dtype(&args.dtype)?)?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let mut prompt_tokens = prompts
        .iter()
        .map(|p| Ok(model.tokenizer.encode(p, args.add_special_tokens)?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    prompts.extend(ids.iter().map(|_| String::new()));
    prompt_tokens.extend(ids);
    let requests: Vec<GenerateRequest> = prompt_tokens
        .into_iter()
        .map(|tokens| GenerateRequest {
            prompt_tokens: tokens,
            params: params.clone(),
            max_tokens: args.max_tokens,
            ignore_eos: args.ignore_eos,
        })
        .collect();
    let opts = OfflineOptions {
        block_size: args.block_size,
        max_batched_tokens: args.max_num_batched_tokens,
        max_num_seqs: args.max_num_seqs,
        seed: args.seed.unwrap_or(0),
        device: args.device,
        ..OfflineOptions::default()
    };
    let (outputs, stats) = model.generate(&requests, &opts)?;
    for (prompt, out) in prompts.iter().zip(&outputs) {
        let text = model.tokenizer.decode(&out.token_ids, true)?;
        if args.json {
            let line = JsonOutput {
                prompt,
                text,
                token_ids: &out.token_ids,
                finish_reason: out.finish_reason,
            };
            println!("{}", serde_json::to_string(&line)?);
        } else {
            println!(
                "--- prompt: {prompt:?}\n{text}\n[{} tokens, finish_reason={:?}]",
                out.token_ids.len(),
                out.finish_reason
            );
        }
    }
    eprintln!(
        "{} prompts, {} prompt tokens, {} generated tokens | prefill {:.3}s ({:.1} tok/s) | decode {:.3}s ({:.1} tok/s) | {} steps",
        prompts.len(),
        stats.prompt_tokens,
        stats.generated_tokens,
        stats.prefill_time.as_secs_f64(),
        stats.prompt_tokens as f64 / stats.prefill_time.as_secs_f64().max(1e-9),
        stats.decode_time.as_secs_f64(),
        stats.decode_tokens_per_second(prompts.len()),
        stats.steps
    );
    Ok(())
}
