//! The engine's typed errors. Every message says what was wrong and, where it
//! helps, what to do about it: these strings reach CLI and API users.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model directory {dir} has no {file}: {hint}")]
    MissingFile {
        dir: PathBuf,
        file: String,
        hint: &'static str,
    },
    #[error("could not read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON for {what}: {source}")]
    BadJson {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("unsupported architecture {found:?} in config.json; tandem supports {supported}")]
    UnsupportedArchitecture {
        found: Vec<String>,
        supported: String,
    },
    #[error("unsupported model configuration: {0}")]
    UnsupportedConfig(String),
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    #[error("weights have no tensor {name:?}; the checkpoint does not match its config.json (architecture {architecture})")]
    MissingTensor { name: String, architecture: String },
    #[error("tensor {name:?} has shape {found:?}, config.json implies {expected:?}")]
    TensorShape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("could not open safetensors file {path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("could not read GGUF file {path}: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("unsupported GGUF file {path}: {what}")]
    UnsupportedGguf { path: PathBuf, what: String },
    #[error(transparent)]
    Guided(#[from] crate::guided::GuidedError),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("unsupported dtype {0:?}; use one of f32, bf16")]
    UnsupportedDtype(String),
    #[error("prompt is empty: at least one token is needed")]
    EmptyPrompt,
    #[error("{tokens} tokens exceed the model's context length of {max_model_len}")]
    TooLong { tokens: usize, max_model_len: usize },
    #[error("the KV cache has {total} blocks of {block_size} tokens, too few for this request ({needed} needed); raise --kv-cache-memory")]
    KvCacheTooSmall {
        total: usize,
        needed: usize,
        block_size: usize,
    },
    #[error("the prefill worker sent {blocks} KV blocks for a {prompt_tokens}-token prompt, which needs ceil({prompt_tokens} / {block_size}); prefill and decode workers must use the same --block-size")]
    HandoffMismatch {
        blocks: usize,
        prompt_tokens: usize,
        block_size: usize,
    },
    #[error("the prefill worker's block hashes for this prompt differ from this worker's; prefill and decode workers must run the same tandem version with the same --block-size")]
    HandoffHashMismatch,
    #[error("the prefill worker sent {checksums} block checksums for {blocks} KV blocks; prefill and decode workers must run the same tandem version")]
    HandoffChecksums { checksums: usize, blocks: usize },
    #[error(
        "--device {value:?} is not a device: {reason}; use cpu, cuda or cuda:N (N the GPU's index)"
    )]
    BadDevice { value: String, reason: String },
    #[error("--device {device} needs the `cuda` feature, which this tandem binary was built without: rebuild with `cargo build --release --features tandem-server/cuda` (no CUDA toolkit is needed to build), or use --device cpu")]
    CudaNotBuilt { device: String },
    #[error("--device {device}: {message} (--device cpu runs without a GPU)")]
    Cuda { device: String, message: String },
    #[error("--gpu-memory-utilization {fraction} leaves {available_mib} MiB for the KV cache on {device} after {used_mib} MiB of weights, activations and other processes (of {total_mib} MiB), too little for one {block_mib} MiB block: raise --gpu-memory-utilization, lower --max-num-batched-tokens, or free the GPU")]
    GpuMemory {
        device: String,
        fraction: f64,
        total_mib: usize,
        used_mib: usize,
        available_mib: usize,
        block_mib: f64,
    },
    #[error("{what} is only available with --device cpu: {reason}")]
    CpuOnly {
        what: &'static str,
        reason: &'static str,
    },
    #[error("the KV arena given to the runner holds {got_bytes} bytes of {got_dtype:?}, but {num_blocks} blocks of this model need {expected_bytes} bytes of {expected_dtype:?}; size it with ModelRunner::host_layout")]
    KvArenaMismatch {
        num_blocks: usize,
        expected_bytes: usize,
        expected_dtype: candle_core::DType,
        got_bytes: usize,
        got_dtype: candle_core::DType,
    },
    #[error("KV arena: {0}")]
    KvArena(#[from] tandem_kernels::KernelError),
    #[error(transparent)]
    Sampling(#[from] crate::sampler::SamplingError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Reads a file, attaching its path to the error.
pub(crate) fn read_to_string(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a JSON file into `T`, naming the file and its role on failure.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    what: &'static str,
) -> Result<T> {
    let text = read_to_string(path)?;
    serde_json::from_str(&text).map_err(|source| EngineError::BadJson {
        path: path.to_path_buf(),
        what,
        source,
    })
}
