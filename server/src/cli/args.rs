//! Flags shared by the commands that serve: the HTTP side (every server)
//! and the engine side (every worker), named as in vLLM where vLLM has them.

use std::net::IpAddr;
use std::path::PathBuf;

use tandem_engine::loader::DEFAULT_GPU_MEMORY_UTILIZATION;
use tandem_engine::scheduler::SchedulerConfig;
use tandem_engine::{DeviceSpec, EngineOptions};

use crate::api::tool_parser::ToolCallFormat;

/// What every API server (worker or router) takes.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Hugging Face model directory, or a GGUF file (or a directory holding
    /// one; llama, qwen2, qwen3 architectures). Without it, the random-weight
    /// demo model `small` is written to ./demo-models/small (once) and served.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Names clients use in `model`; the first is reported (default: --model as given).
    #[arg(long, num_args = 1..)]
    pub served_model_name: Vec<String>,
    /// Address to bind (workers: keep 127.0.0.1 unless a router on another
    /// host must reach them).
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// 0 picks a free port (printed once listening).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer <key>` on /v1 routes.
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Read the API key from the first line of this file instead (a
    /// mounted Kubernetes Secret), so it is never on a command line.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Most sequences waiting for their first token; more are refused with 429.
    #[arg(long, default_value_t = 1024)]
    pub max_waiting: usize,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// Cap the context (prompt plus output) below the model's own.
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// How the model writes tool calls, for `tools` in chat requests:
    /// `hermes` (`<tool_call>` tags: Qwen2.5, SmolLM2, Hermes) or
    /// `llama3_json` (Llama 3.1+ JSON calls).
    #[arg(long, value_enum, default_value_t = ToolCallFormat::Hermes)]
    pub tool_call_parser: ToolCallFormat,
    /// Largest request body accepted, in bytes; larger ones get a 413.
    #[arg(long, default_value_t = crate::api::DEFAULT_MAX_BODY_BYTES)]
    pub max_request_body: usize,
    /// Log every prompt and completion (info level, target
    /// `tandem::prompts`). Off by default: no request text is ever logged.
    #[arg(long)]
    pub log_prompts: bool,
    /// Parse and check the flags, then exit 0 without starting anything
    /// (for validating deployment manifests).
    #[arg(long)]
    pub check_config: bool,
}

/// How a worker runs its engine.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Compute dtype: f32 or bf16. On CPUs with AMX (Xeon Sapphire Rapids
    /// and later) bf16 runs prefill and batched decode on AMX tiles, several
    /// times the f32 GEMM rate; with AVX512-BF16 (AMD Zen 4 and later) on
    /// `vdpbf16ps`, about twice it; everywhere it halves the bytes decode
    /// reads.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[arg(long, default_value_t = 256)]
    pub max_num_seqs: usize,
    #[arg(long, default_value_t = 2048)]
    pub max_num_batched_tokens: usize,
    /// Tokens per KV block (prefill and decode workers must agree).
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    #[arg(long)]
    pub no_enable_prefix_caching: bool,
    /// KV-cache size, e.g. 512MiB or 2GiB (default: a quarter of free memory, at most 4 GiB).
    #[arg(long, value_parser = parse_bytes)]
    pub kv_cache_memory: Option<usize>,
    /// Seed for requests that carry none.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the model and its KV cache live: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// On a GPU: the share of its total memory this worker may use for
    /// weights, activations and the KV cache together (the cache gets the
    /// rest), as in vLLM. --kv-cache-memory overrides it.
    #[arg(long, default_value_t = DEFAULT_GPU_MEMORY_UTILIZATION, value_parser = parse_fraction)]
    pub gpu_memory_utilization: f64,
}

impl EngineArgs {
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            scheduler: SchedulerConfig {
                max_num_seqs: self.max_num_seqs,
                max_num_batched_tokens: self.max_num_batched_tokens,
                block_size: self.block_size,
                enable_prefix_caching: !self.no_enable_prefix_caching,
            },
            kv_cache_memory: self.kv_cache_memory,
            seed: self.seed,
            device: self.device,
            gpu_memory_utilization: self.gpu_memory_utilization,
        }
    }

    /// Flags as given, for passing on to child workers.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--dtype".into(),
            self.dtype.clone(),
            "--max-num-seqs".into(),
            self.max_num_seqs.to_string(),
            "--max-num-batched-tokens".into(),
            self.max_num_batched_tokens.to_string(),
            "--block-size".into(),
            self.block_size.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--device".into(),
            self.device.to_string(),
            "--gpu-memory-utilization".into(),
            self.gpu_memory_utilization.to_string(),
        ];
        if self.no_enable_prefix_caching {
            a.push("--no-enable-prefix-caching".into());
        }
        if let Some(b) = self.kv_cache_memory {
            a.extend(["--kv-cache-memory".into(), b.to_string()]);
        }
        a
    }
}

/// A share in (0, 1].
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("{s:?} is not a fraction in (0, 1], e.g. 0.9")),
    }
}

/// `512MiB`, `2GiB`, `1G`, or plain bytes.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512MiB"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert_eq!(super::parse_fraction("0.5"), Ok(0.5));
        assert!(super::parse_fraction("0").unwrap_err().contains("(0, 1]"));
        assert!(super::parse_fraction("1.5").is_err());
    }
}
