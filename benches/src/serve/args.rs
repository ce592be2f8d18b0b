//! Command-line options of `tandem-bench serve`, named after
//! `vllm bench serve`'s where one exists.

use std::path::PathBuf;

use super::arrivals::RequestRate;
use super::client::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetName {
    /// Random tokens, token-exact --input-len / --output-len.
    Random,
    /// First human turn of each conversation in a ShareGPT JSON file.
    Sharegpt,
    /// Groups sharing a long prefix (exercises prefix caching).
    Prefix,
    /// Chat completions carrying `index_name` for the server's RAG module.
    Rag,
    /// Short prompts mixed with long ones (the interference study).
    Mixed,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Server root, without /v1.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub base_url: String,
    /// Model name sent in each request; default: the first of GET /v1/models.
    #[arg(long)]
    pub model: Option<String>,
    /// Directory with tokenizer.json (or the file) used to count prompt
    /// tokens; default: --model when that is a local directory.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "completions")]
    pub endpoint: Endpoint,
    #[arg(
        long = "dataset",
        alias = "dataset-name",
        value_enum,
        default_value = "random"
    )]
    pub dataset: DatasetName,
    /// ShareGPT JSON file (sharegpt; optional questions for rag).
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    pub num_prompts: usize,
    /// Requests per second, or `inf` to send them all at once.
    #[arg(long, default_value = "inf")]
    pub request_rate: RequestRate,
    /// Gamma shape of inter-arrival gaps: 1 = Poisson, <1 burstier, >1 smoother.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// At most this many requests in flight (others wait in the client).
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Prompt tokens (random, rag, mixed-short; the suffix in prefix).
    #[arg(long, default_value_t = 1024)]
    pub input_len: usize,
    /// Tokens to generate (sharegpt: default is each reply's own length).
    #[arg(long)]
    pub output_len: Option<usize>,
    /// Lengths are drawn uniformly in [len·(1−r), len·(1+r)].
    #[arg(long, alias = "random-range-ratio", default_value_t = 0.0)]
    pub range_ratio: f64,
    /// prefix: tokens of the shared prefix.
    #[arg(long, default_value_t = 1024)]
    pub prefix_len: usize,
    /// prefix: number of distinct shared prefixes.
    #[arg(long, default_value_t = 4)]
    pub num_prefix_groups: usize,
    /// mixed: prompt tokens of the long requests.
    #[arg(long, default_value_t = 2048)]
    pub long_input_len: usize,
    /// mixed: fraction of requests that are long.
    #[arg(long, default_value_t = 0.2)]
    pub long_fraction: f64,
    /// rag: the `index_name` sent with each chat request.
    #[arg(long, default_value = "default")]
    pub index_name: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SLOs for goodput, e.g. `--goodput ttft:500 tpot:50 e2el:10000` (ms).
    #[arg(long, num_args = 1..)]
    pub goodput: Vec<String>,
    /// Percentiles to report (e.g. 50,90,99).
    #[arg(long, value_delimiter = ',', default_value = "90,99")]
    pub percentiles: Vec<f64>,
    /// Ask the server to ignore end-of-sequence (exact output lengths).
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Bearer token, if the server wants one.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Give up on a request after this many seconds (counted as failed).
    #[arg(long, default_value_t = 600.0)]
    pub request_timeout: f64,
    /// Unmeasured requests sent one by one before the run (cold start).
    #[arg(long, default_value_t = 1)]
    pub num_warmups: usize,
    /// Name of this run in saved results and plots.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the result JSON here.
    #[arg(long)]
    pub save_result: Option<PathBuf>,
    /// No progress bar (e.g. in logs).
    #[arg(long)]
    pub no_progress: bool,
}
