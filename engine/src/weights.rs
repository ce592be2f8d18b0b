//! Model weights by Hugging Face tensor name, from memory-mapped safetensors
//! or a GGUF file. Tensors are read one at a time (and converted to the
//! compute dtype), so loading never holds a second copy of the whole
//! checkpoint.

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;

use crate::error::{EngineError, Result};
use crate::gguf::GgufWeights;

enum Source {
    Safetensors(MmapedSafetensors),
    Gguf(GgufWeights),
}

pub struct Weights {
    source: Source,
    dtype: DType,
    device: Device,
    architecture: String,
}

impl Weights {
    pub fn open(
        paths: &[PathBuf],
        dtype: DType,
        device: &Device,
        architecture: &str,
    ) -> Result<Self> {
        for p in paths {
            // Surface a readable error before the mapping's own.
            std::fs::metadata(p).map_err(|source| EngineError::Io {
                path: p.clone(),
                source,
            })?;
        }
        // SAFETY: the files are mapped read-only; like every mmap loader we
        // assume nobody truncates them while the engine runs.
        let files =
            unsafe { MmapedSafetensors::multi(paths) }.map_err(|e| EngineError::Safetensors {
                path: paths.first().cloned().unwrap_or_default(),
                message: e.to_string(),
            })?;
        Ok(Weights {
            source: Source::Safetensors(files),
            dtype,
            device: device.clone(),
            architecture: architecture.to_string(),
        })
    }

    /// Weights of a GGUF file, dequantized as they are read.
    pub fn from_gguf(gguf: GgufWeights, dtype: DType, device: &Device, architecture: &str) -> Self {
        Weights {
            source: Source::Gguf(gguf),
            dtype,
            device: device.clone(),
            architecture: architecture.to_string(),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Safetensors(files) => files.get(name).is_ok(),
            Source::Gguf(gguf) => gguf.contains(name),
        }
    }

    /// Loads `name`, checks its shape and converts it to the compute dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let files = match &self.source {
            Source::Safetensors(files) => files,
            Source::Gguf(gguf) => {
                return gguf.get(name, shape, self.dtype, &self.device, &self.architecture)
            }
        };
        let view = files.get(name).map_err(|_| EngineError::MissingTensor {
            name: name.to_string(),
            architecture: self.architecture.clone(),
        })?;
        if view.shape() != shape {
            return Err(EngineError::TensorShape {
                name: name.to_string(),
                found: view.shape().to_vec(),
                expected: shape.to_vec(),
            });
        }
        let t = candle_core::safetensors::Load::load(&view, &self.device)?;
        Ok(t.to_dtype(self.dtype)?)
    }
}
