//! tandem's engine: model loading, paged KV cache, scheduler, sampler and
//! the forward pass. DESIGN.md (shared) holds the big picture.

pub mod batch;
pub mod config;
pub mod demo;
pub mod detokenizer;
pub mod engine_core;
pub mod error;
pub mod generation_config;
pub mod gguf;
pub mod guided;
pub mod host_memory;
pub mod kv_cache;
pub mod kv_handoff;
pub mod loader;
pub mod model_dir;
pub mod models;
pub mod offline;
pub mod runner;
pub mod sampler;
pub mod scheduler;
pub mod sequence;
pub mod serving;
pub mod stop;
pub mod tokenizer;
pub mod weights;

pub use error::{EngineError, Result};
pub use loader::{parse_dtype, EngineOptions, LoadedModel, ModelMeta, ModelSource};
pub use runner::{DeviceSpec, ModelRunner};
