//! GGUF files (llama.cpp's format) as a model source. candle's `quantized`
//! module reads the file and dequantizes its tensors; this module turns the
//! metadata into a [`crate::config::ModelConfig`] and a tokenizer, and maps
//! tensor names and layouts back to the Hugging Face ones the model code
//! expects, so a GGUF model runs through the same forward pass.

mod config;
mod sentencepiece;
mod tokenizer;
mod weights;

use candle_core::quantized::gguf_file::{Content, Value};
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

pub use weights::{gguf_tensor_name, GgufWeights};

/// Architectures (`general.architecture`) tandem reads from GGUF files.
/// Mistral GGUFs say `llama`.
pub const SUPPORTED_ARCHITECTURES: &str = "llama (also Mistral), qwen2, qwen3";

/// A GGUF file's header: metadata and where each tensor lies.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
}

/// The `.gguf` file that `model` names: the file itself, or the only one in a
/// directory that has no `config.json`. `None` means "not a GGUF model".
pub fn locate(model: &Path) -> Result<Option<PathBuf>> {
    if model.is_file() {
        return Ok(is_gguf(model).then(|| model.to_path_buf()));
    }
    if !model.is_dir() || model.join("config.json").exists() {
        return Ok(None);
    }
    let entries = std::fs::read_dir(model).map_err(|source| EngineError::Io {
        path: model.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_gguf(p))
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(EngineError::UnsupportedGguf {
            path: model.to_path_buf(),
            what: format!("the directory holds {n} .gguf files; pass --model the one to load"),
        }),
    }
}

fn is_gguf(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let content = Content::read(&mut file).map_err(|e| {
            let message = e.to_string();
            if message.contains("unknown dtype") {
                EngineError::UnsupportedGguf {
                    path: path.to_path_buf(),
                    what: format!(
                        "a tensor has a quantization type candle cannot read ({message}); \
                         supported: {}",
                        weights::SUPPORTED_TYPES
                    ),
                }
            } else {
                EngineError::Gguf {
                    path: path.to_path_buf(),
                    message,
                }
            }
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
        })
    }

    pub fn architecture(&self) -> Result<String> {
        self.string("general.architecture")
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub(crate) fn missing(&self, key: &str) -> EngineError {
        EngineError::Gguf {
            path: self.path.clone(),
            message: format!("metadata lacks {key:?} (or it has the wrong type)"),
        }
    }

    pub(crate) fn string(&self, key: &str) -> Result<String> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(self.missing(key)),
        }
    }

    /// An integer of any width, as writers differ in which they use.
    pub(crate) fn opt_uint(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(as_u64)
    }

    pub(crate) fn uint(&self, key: &str) -> Result<u64> {
        self.opt_uint(key).ok_or_else(|| self.missing(key))
    }

    /// A float; an f32 is read as the shortest decimal that names it (the
    /// converter wrote config.json's `1e-6` as f32, and `1e-6` is what it meant).
    pub(crate) fn opt_float(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::F32(x) => x.to_string().parse().ok(),
            Value::F64(x) => Some(*x),
            v => as_u64(v).map(|x| x as f64),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub(crate) fn array(&self, key: &str) -> Option<&Vec<Value>> {
        match self.get(key)? {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Ids that end generation: EOS, and the end-of-turn / end-of-message
    /// tokens llama.cpp also stops on.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        ["eos", "eot", "eom"]
            .iter()
            .filter_map(|k| self.opt_uint(&format!("tokenizer.ggml.{k}_token_id")))
            .filter_map(|id| u32::try_from(id).ok())
            .collect()
    }

    pub(crate) fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub(crate) fn unsupported(&self, what: String) -> EngineError {
        EngineError::UnsupportedGguf {
            path: self.path.clone(),
            what,
        }
    }
}

pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::I8(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::I64(x) => Some(x),
        _ => as_u64(v).and_then(|x| i64::try_from(x).ok()),
    }
}
