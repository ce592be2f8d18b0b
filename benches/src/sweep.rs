//! `tandem-bench sweep`: the same dataset at several request rates (or
//! concurrency caps), one `serve` run each, one JSON line per run — the
//! input of `tandem-bench plot`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::serve::{self, arrivals::RequestRate};

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub serve: serve::Args,
    /// Request rates to sweep, e.g. `1,2,4,8,inf`.
    #[arg(long, value_delimiter = ',', conflicts_with = "concurrencies")]
    pub rates: Vec<RequestRate>,
    /// Concurrency caps to sweep (at --request-rate), e.g. `1,4,16`.
    #[arg(long, value_delimiter = ',')]
    pub concurrencies: Vec<usize>,
    /// JSON-lines file the runs are appended to.
    #[arg(long)]
    pub out: PathBuf,
    /// Seconds to wait between runs so the server drains its queue.
    #[arg(long, default_value_t = 2.0)]
    pub cooldown: f64,
    /// Keep per-request arrays (ttfts, itls, texts, …) in each line.
    #[arg(long)]
    pub keep_details: bool,
}

/// Fields that grow with the number of requests; dropped unless asked for.
const PER_REQUEST_FIELDS: [&str; 7] = [
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "request_classes",
    "generated_texts",
    "errors",
];

pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    if args.rates.is_empty() == args.concurrencies.is_empty() {
        bail!("give exactly one of --rates R1,R2,… or --concurrencies C1,C2,…");
    }
    let rt = serve::runtime()?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("cannot open {}", args.out.display()))?;
    // Each run gets its own seed (and so its own prompts): reusing one
    // dataset would let a prefix-caching server answer later runs from cache.
    let runs: Vec<serve::Args> = if args.rates.is_empty() {
        args.concurrencies
            .iter()
            .map(|&c| serve::Args {
                max_concurrency: Some(c),
                ..args.serve.clone()
            })
            .collect()
    } else {
        args.rates
            .iter()
            .map(|&r| serve::Args {
                request_rate: r,
                ..args.serve.clone()
            })
            .collect()
    };
    for (i, mut run_args) in runs.into_iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_secs_f64(args.cooldown));
        }
        run_args.seed = args.serve.seed.wrapping_add(i as u64);
        let plan = rt.block_on(serve::plan(&run_args))?;
        let (rate, conc) = (plan.info.request_rate, plan.info.max_concurrency);
        let result = rt.block_on(serve::execute(plan))?;
        let m = &result.metrics;
        println!(
            "rate {rate} conc {} | done {} failed {} | {:.2} req/s {:.1} out tok/s | TTFT p99 {:.1} ms | TPOT p99 {:.1} ms",
            conc.map_or("-".into(), |c| c.to_string()),
            m.completed,
            m.failed,
            m.request_throughput,
            m.output_throughput,
            p99(&result.json, "ttft"),
            p99(&result.json, "tpot"),
        );
        serve::print_errors(&result.outputs);
        let mut line = result.json;
        if !args.keep_details {
            if let Value::Object(map) = &mut line {
                for f in PER_REQUEST_FIELDS {
                    map.remove(f);
                }
            }
        }
        writeln!(file, "{}", serde_json::to_string(&line)?)?;
        file.flush()?;
    }
    println!("appended to {}", args.out.display());
    Ok(())
}

fn p99(json: &Value, metric: &str) -> f64 {
    json[format!("p99_{metric}_ms")]
        .as_f64()
        .unwrap_or(f64::NAN)
}
