//! `tandem-bench serve`: load-test any OpenAI-compatible server the way
//! `vllm bench serve` does — build a dataset, send it on a Poisson/gamma
//! schedule (optionally capped in concurrency), time every streamed token,
//! and report TTFT/TPOT/ITL/E2E, throughput and goodput as text and JSON.

pub mod args;
pub mod arrivals;
pub mod client;
pub mod datasets;
pub mod metrics;
pub mod progress;
pub mod report;
pub mod server_split;

#[cfg(test)]
mod harness_tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tokio::sync::Semaphore;

pub use args::Args;
use args::DatasetName;
use arrivals::RequestRate;
use client::{ClientConfig, RequestOutput};
use datasets::{tokens::PromptTokenizer, SampleRequest};
use metrics::{RunMetrics, Slo};

/// What describes a run in its saved result.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub label: Option<String>,
    pub model: String,
    pub tokenizer: Option<String>,
    pub endpoint: client::Endpoint,
    pub dataset: &'static str,
    pub request_rate: RequestRate,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    pub goodput: Vec<String>,
}

/// A ready-to-send run: requests, schedule knobs and client settings.
#[derive(Clone)]
pub struct Plan {
    pub info: RunInfo,
    pub client: ClientConfig,
    pub requests: Vec<SampleRequest>,
    pub seed: u64,
    pub slo: Slo,
    pub percentiles: Vec<f64>,
    pub request_timeout: Duration,
    pub show_progress: bool,
    /// Requests sent (one at a time, not measured) before the run.
    pub num_warmups: usize,
}

/// The outcome of one run.
pub struct RunResult {
    /// The server's mean time per phase (queue, prefill, KV transfer,
    /// first decode step) from its /metrics; empty when it has none.
    pub server_split: Vec<server_split::PhaseMean>,
    pub metrics: RunMetrics,
    pub outputs: Vec<RequestOutput>,
    pub duration: f64,
    pub json: Value,
}

/// The CLI entry: plan, run, print, save.
pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = runtime()?;
    let result = rt.block_on(async {
        let plan = plan(&args).await?;
        execute(plan).await
    })?;
    println!("{}", report::summary_text(&result.metrics, result.duration));
    if !result.server_split.is_empty() {
        println!("{}", report::split_text(&result.server_split));
    }
    print_errors(&result.outputs);
    if let Some(path) = &args.save_result {
        save_json(path, &result.json)?;
        println!("saved {}", path.display());
    }
    Ok(())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn save_json(path: &std::path::Path, value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Print the first few distinct errors so a misconfiguration shows at once.
pub fn print_errors(outputs: &[RequestOutput]) {
    let mut seen = Vec::new();
    for o in outputs.iter().filter(|o| !o.success) {
        if !seen.contains(&o.error) {
            seen.push(o.error.clone());
        }
    }
    for (i, e) in seen.iter().take(5).enumerate() {
        eprintln!("error {i}: {e}");
    }
}

/// Resolve the model and tokenizer, and build the dataset.
pub async fn plan(args: &Args) -> anyhow::Result<Plan> {
    let model = match &args.model {
        Some(m) => m.clone(),
        None => first_model(&args.base_url).await?,
    };
    let tokenizer_dir = args
        .tokenizer
        .clone()
        .or_else(|| Some(PathBuf::from(&model)).filter(|p| p.is_dir()));
    let Some(tokenizer_dir) = tokenizer_dir else {
        bail!("no tokenizer to count prompt tokens with: pass --tokenizer DIR (a directory holding tokenizer.json, e.g. the model's)");
    };
    let tok = PromptTokenizer::load(&tokenizer_dir)?;
    let requests = build_dataset(args, &tok)?;
    let slo = Slo::parse(&args.goodput).map_err(anyhow::Error::msg)?;
    if args.burstiness.is_nan() || args.burstiness <= 0.0 {
        bail!(
            "--burstiness must be > 0 (1 = Poisson), got {}",
            args.burstiness
        );
    }
    let endpoint = match args.dataset {
        DatasetName::Rag => client::Endpoint::Chat,
        _ => args.endpoint,
    };
    Ok(Plan {
        info: RunInfo {
            label: args.label.clone(),
            model: model.clone(),
            tokenizer: Some(tokenizer_dir.display().to_string()),
            endpoint,
            dataset: dataset_name(args.dataset),
            request_rate: args.request_rate,
            burstiness: args.burstiness,
            max_concurrency: args.max_concurrency,
            goodput: args.goodput.clone(),
        },
        client: ClientConfig {
            base_url: args.base_url.clone(),
            model,
            endpoint,
            ignore_eos: args.ignore_eos,
            temperature: args.temperature,
            api_key: args.api_key.clone(),
        },
        requests,
        seed: args.seed,
        slo,
        percentiles: args.percentiles.clone(),
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        show_progress: !args.no_progress,
        num_warmups: args.num_warmups,
    })
}

fn dataset_name(d: DatasetName) -> &'static str {
    match d {
        DatasetName::Random => "random",
        DatasetName::Sharegpt => "sharegpt",
        DatasetName::Prefix => "prefix",
        DatasetName::Rag => "rag",
        DatasetName::Mixed => "mixed",
    }
}

fn build_dataset(args: &Args, tok: &PromptTokenizer) -> anyhow::Result<Vec<SampleRequest>> {
    use datasets::*;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let output_len = args.output_len.unwrap_or(128);
    let random_spec = random::RandomSpec {
        num_prompts: args.num_prompts,
        input_len: args.input_len,
        output_len,
        range_ratio: args.range_ratio,
    };
    let requests = match args.dataset {
        DatasetName::Random => random::build(&random_spec, tok, &mut rng)?,
        DatasetName::Sharegpt => {
            let path = args.dataset_path.as_deref().ok_or(DatasetError::Missing {
                dataset: "sharegpt",
                what: "--dataset-path FILE (ShareGPT JSON)",
            })?;
            sharegpt::build(path, args.num_prompts, args.output_len, tok, &mut rng)?
        }
        DatasetName::Prefix => prefix::build(
            &prefix::PrefixSpec {
                num_prompts: args.num_prompts,
                num_groups: args.num_prefix_groups,
                prefix_len: args.prefix_len,
                suffix_len: args.input_len,
                output_len,
            },
            tok,
            &mut rng,
        )?,
        DatasetName::Rag => rag::build(
            &args.index_name,
            args.dataset_path.as_deref(),
            &random_spec,
            tok,
            &mut rng,
        )?,
        DatasetName::Mixed => mixed::build(
            &mixed::MixedSpec {
                num_prompts: args.num_prompts,
                long_fraction: args.long_fraction,
                short_input_len: args.input_len,
                long_input_len: args.long_input_len,
                output_len,
            },
            tok,
            &mut rng,
        )?,
    };
    Ok(requests)
}

/// The first model the server lists (`GET /v1/models`).
async fn first_model(base_url: &str) -> anyhow::Result<String> {
    let url = format!("{}/v1/models", base_url.trim_end_matches('/'));
    let body: Value = reqwest::get(&url)
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| {
            format!("cannot list models at {url}: is the server up? (or pass --model)")
        })?
        .json()
        .await
        .with_context(|| format!("{url} did not return JSON"))?;
    body["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{url} lists no model; pass --model"))
}

/// Send every request on schedule and measure them.
pub async fn execute(plan: Plan) -> anyhow::Result<RunResult> {
    let http = reqwest::Client::builder()
        .timeout(plan.request_timeout)
        .pool_max_idle_per_host(plan.requests.len().min(1024))
        .build()
        .context("cannot build the HTTP client")?;
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed.wrapping_add(1));
    let offsets = arrivals::schedule(
        plan.requests.len(),
        plan.info.request_rate,
        plan.info.burstiness,
        &mut rng,
    );
    let limit = plan
        .info
        .max_concurrency
        .map(|c| Arc::new(Semaphore::new(c.max(1))));
    warm_up(&http, &plan).await;
    let scraped_before = server_split::Scrape::fetch(&http, &plan.client.base_url).await;
    let bar = progress::bar(plan.requests.len(), plan.show_progress);
    let client = Arc::new(plan.client.clone());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(plan.requests.len());
    for (req, at) in plan.requests.into_iter().zip(offsets) {
        tokio::time::sleep_until((start + Duration::from_secs_f64(at)).into()).await;
        let (http, client, limit, bar) = (http.clone(), client.clone(), limit.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = match &limit {
                Some(s) => Some(s.clone().acquire_owned().await.expect("never closed")),
                None => None,
            };
            let out = client::send(&http, &client, &req, start).await;
            bar.inc(1);
            out
        }));
    }
    let mut outputs = Vec::with_capacity(tasks.len());
    for t in tasks {
        outputs.push(t.await.context("a request task panicked")?);
    }
    let duration = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let metrics = metrics::compute(&outputs, duration, &plan.slo, &plan.percentiles);
    let mut json = report::to_json(&plan.info, &metrics, &outputs, duration);
    let classes = report::by_class(&outputs, duration, &plan.slo, &plan.percentiles);
    if !classes.is_empty() {
        json["by_class"] = Value::Object(classes);
    }
    let scraped_after = server_split::Scrape::fetch(&http, &plan.client.base_url).await;
    let server_split = match (&scraped_before, &scraped_after) {
        (Some(b), Some(a)) => server_split::split(b, a),
        _ => Vec::new(),
    };
    if !server_split.is_empty() {
        json["server_ttft_split"] = serde_json::to_value(&server_split)?;
    }
    Ok(RunResult {
        server_split,
        metrics,
        outputs,
        duration,
        json,
    })
}

/// Pay cold-start costs (first allocations, page faults, connection setup)
/// outside the measurement. The prompt gets a marker in front so its KV
/// blocks never serve the measured copy from the prefix cache.
async fn warm_up(http: &reqwest::Client, plan: &Plan) {
    let Some(first) = plan.requests.first() else {
        return;
    };
    let mut req = first.clone();
    req.prompt = format!("warm-up: {}", req.prompt);
    for _ in 0..plan.num_warmups {
        let out = client::send(http, &plan.client, &req, Instant::now()).await;
        if !out.success {
            eprintln!("warm-up request failed: {}", out.error);
        }
    }
}
