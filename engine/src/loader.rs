//! Loads a Hugging Face model directory or a GGUF file into a ready
//! [`LoadedModel`].

use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::ModelConfig;
use crate::engine_core::EngineCore;
use crate::error::{EngineError, Result};
use crate::generation_config::GenerationDefaults;
use crate::gguf::{GgufFile, GgufWeights};
use crate::model_dir::ModelFiles;
use crate::models::{CausalLm, DecoderSpec};
use crate::offline::{generate, GenerateOutput, GenerateRequest, GenerateStats, OfflineOptions};
use crate::runner::{DeviceSpec, ModelRunner, RunnerOptions};
use crate::scheduler::SchedulerConfig;
use crate::serving::EngineHandle;
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;

/// Parses a `--dtype` value. f32 and bf16 are the compute dtypes tandem
/// supports; weights in any of f32/bf16/f16 are converted at load.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" | "float" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(EngineError::UnsupportedDtype(other.to_string())),
    }
}

/// How a serving engine is sized.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub scheduler: SchedulerConfig,
    /// Bytes for the KV cache (`--kv-cache-memory`); `None` picks a default
    /// from the memory available.
    pub kv_cache_memory: Option<usize>,
    /// Seed for requests that carry none.
    pub seed: u64,
    /// Where the model and KV cache live (`--device`).
    pub device: DeviceSpec,
    /// On a GPU with no `kv_cache_memory`: the share of the device's total
    /// memory the worker may use (`--gpu-memory-utilization`, as in vLLM).
    pub gpu_memory_utilization: f64,
}

/// vLLM's default share of a GPU's memory.
pub const DEFAULT_GPU_MEMORY_UTILIZATION: f64 = 0.9;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            scheduler: SchedulerConfig::default(),
            kv_cache_memory: None,
            seed: 0,
            device: DeviceSpec::Cpu,
            gpu_memory_utilization: DEFAULT_GPU_MEMORY_UTILIZATION,
        }
    }
}

/// Where a model was loaded from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A Hugging Face directory (config.json, safetensors, tokenizer.json).
    Directory(ModelFiles),
    /// One GGUF file: config, tokenizer and weights all inside it.
    Gguf(PathBuf),
}

pub struct LoadedModel {
    pub source: ModelSource,
    pub config: ModelConfig,
    pub tokenizer: Arc<Tokenizer>,
    pub generation: GenerationDefaults,
    pub model: CausalLm,
    /// Every id that ends generation: config.json, generation_config.json and
    /// the tokenizer's eos token together.
    pub eos_token_ids: Vec<u32>,
}

/// Everything about a model directory but its weights: what a router
/// needs to tokenize, template and validate requests.
pub struct ModelMeta {
    pub source: ModelSource,
    pub config: ModelConfig,
    pub tokenizer: Arc<Tokenizer>,
    pub generation: GenerationDefaults,
    pub eos_token_ids: Vec<u32>,
}

impl ModelMeta {
    /// Reads `model`: a Hugging Face directory, a `.gguf` file, or a
    /// directory holding exactly one `.gguf` file (and no config.json).
    pub fn load(model: &Path) -> Result<Self> {
        if let Some(path) = crate::gguf::locate(model)? {
            let gguf = GgufFile::open(&path)?;
            return Ok(Self::from_gguf(&gguf)?.0);
        }
        let files = ModelFiles::locate(model)?;
        let config = ModelConfig::from_file(&files.config)?;
        let tokenizer = Tokenizer::load(&files)?;
        let generation = match &files.generation_config {
            Some(p) => GenerationDefaults::from_file(p)?,
            None => GenerationDefaults::default(),
        };
        Ok(Self::assemble(
            ModelSource::Directory(files),
            config,
            tokenizer,
            generation,
        ))
    }

    /// The metadata of an opened GGUF file (returned alongside, for its weights).
    fn from_gguf(gguf: &GgufFile) -> Result<(Self, ModelConfig)> {
        let config = gguf.model_config()?;
        let tokenizer = gguf.tokenizer()?;
        let generation = GenerationDefaults {
            bos_token_id: config.bos_token_id,
            eos_token_ids: gguf.stop_token_ids(),
            ..GenerationDefaults::default()
        };
        let meta = Self::assemble(
            ModelSource::Gguf(gguf.path.clone()),
            config.clone(),
            tokenizer,
            generation,
        );
        Ok((meta, config))
    }

    fn assemble(
        source: ModelSource,
        config: ModelConfig,
        tokenizer: Tokenizer,
        generation: GenerationDefaults,
    ) -> Self {
        let mut eos_token_ids = generation.eos_token_ids.clone();
        eos_token_ids.extend(&config.eos_token_ids);
        if let Some(id) = tokenizer
            .eos_token
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t))
        {
            eos_token_ids.push(id);
        }
        eos_token_ids.sort_unstable();
        eos_token_ids.dedup();
        ModelMeta {
            source,
            config,
            tokenizer: Arc::new(tokenizer),
            generation,
            eos_token_ids,
        }
    }
}

impl LoadedModel {
    /// Loads `model` (see [`ModelMeta::load`]) with weights in `dtype`.
    pub fn load(path: &Path, dtype: DType) -> Result<Self> {
        let device = Device::Cpu;
        let (meta, weights) = match crate::gguf::locate(path)? {
            Some(path) => {
                let gguf = GgufFile::open(&path)?;
                let (meta, config) = ModelMeta::from_gguf(&gguf)?;
                let arch = config.architecture.hf_name();
                let weights = GgufWeights::new(gguf, &config);
                (meta, Weights::from_gguf(weights, dtype, &device, arch))
            }
            None => {
                let meta = ModelMeta::load(path)?;
                let ModelSource::Directory(files) = &meta.source else {
                    unreachable!("a model that is not GGUF loads from a directory")
                };
                let arch = meta.config.architecture.hf_name();
                let weights = Weights::open(&files.weights, dtype, &device, arch)?;
                (meta, weights)
            }
        };
        let ModelMeta {
            source,
            config,
            tokenizer,
            generation,
            eos_token_ids,
        } = meta;
        let model = CausalLm::load(
            &config,
            &DecoderSpec::for_config(&config),
            &weights,
            &device,
        )?;
        tracing::info!(
            model = %path.display(),
            architecture = config.architecture.hf_name(),
            parameters = config.num_parameters(),
            ?dtype,
            "model loaded"
        );
        Ok(LoadedModel {
            source,
            config,
            tokenizer,
            generation,
            model,
            eos_token_ids,
        })
    }

    /// Everything but the weights.
    pub fn meta(&self) -> ModelMeta {
        ModelMeta {
            source: self.source.clone(),
            config: self.config.clone(),
            tokenizer: self.tokenizer.clone(),
            generation: self.generation.clone(),
            eos_token_ids: self.eos_token_ids.clone(),
        }
    }

    pub fn generate(
        &self,
        requests: &[GenerateRequest],
        opts: &OfflineOptions,
    ) -> Result<(Vec<GenerateOutput>, GenerateStats)> {
        generate(&self.model, &self.eos_token_ids, requests, opts)
    }

    /// Starts the serving engine thread for this model.
    pub fn start_engine(&self, opts: &EngineOptions) -> Result<EngineHandle> {
        Ok(EngineHandle::spawn(
            self.build_core(opts)?,
            self.tokenizer.clone(),
        ))
    }

    /// The engine core without its thread: a disaggregated worker registers
    /// the KV arena with its transfer agent before starting it.
    pub fn build_core(&self, opts: &EngineOptions) -> Result<EngineCore> {
        let runner = ModelRunner::new(&self.model, &RunnerOptions::from_engine(opts))?;
        EngineCore::new(
            runner,
            self.eos_token_ids.clone(),
            opts.scheduler.clone(),
            opts.seed,
        )
    }

    pub fn max_model_len(&self) -> usize {
        self.config.max_position_embeddings
    }
}
