//! Memory-mapped safetensors weights. Tensors are read one at a time straight
//! from the mapping (and converted to the compute dtype), so loading never
//! holds a second copy of the whole checkpoint.

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;

use crate::error::{EngineError, Result};

pub struct Weights {
    files: MmapedSafetensors,
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
            files,
            dtype,
            device: device.clone(),
            architecture: architecture.to_string(),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn contains(&self, name: &str) -> bool {
        self.files.get(name).is_ok()
    }

    /// Loads `name`, checks its shape and converts it to the compute dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let view = self
            .files
            .get(name)
            .map_err(|_| EngineError::MissingTensor {
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
