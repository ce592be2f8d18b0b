//! Locating the files of a Hugging Face model directory.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{read_json, EngineError, Result};

/// The files tandem reads from one model directory.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    /// One `model.safetensors`, or every shard named by the index.
    pub weights: Vec<PathBuf>,
    pub tokenizer: PathBuf,
    pub tokenizer_config: Option<PathBuf>,
    pub generation_config: Option<PathBuf>,
    pub chat_template_jinja: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

fn existing(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    p.is_file().then_some(p)
}

fn require(dir: &Path, name: &str, hint: &'static str) -> Result<PathBuf> {
    existing(dir, name).ok_or_else(|| EngineError::MissingFile {
        dir: dir.to_path_buf(),
        file: name.to_string(),
        hint,
    })
}

impl ModelFiles {
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EngineError::MissingFile {
                dir: dir.to_path_buf(),
                file: "(the directory itself)".into(),
                hint: "pass --model a Hugging Face model directory, or make one with `tandem demo-model --out DIR`",
            });
        }
        let config = require(
            dir,
            "config.json",
            "every Hugging Face checkpoint has one; is this the right directory?",
        )?;
        let weights = if let Some(single) = existing(dir, "model.safetensors") {
            vec![single]
        } else if let Some(index) = existing(dir, "model.safetensors.index.json") {
            let index: ShardIndex = read_json(&index, "a safetensors shard index")?;
            let shards: BTreeSet<&String> = index.weight_map.values().collect();
            shards
                .into_iter()
                .map(|s| {
                    require(
                        dir,
                        s,
                        "a shard named by model.safetensors.index.json is missing",
                    )
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            return Err(EngineError::MissingFile {
                dir: dir.to_path_buf(),
                file: "model.safetensors (or model.safetensors.index.json)".into(),
                hint: "only safetensors weights are supported; convert .bin/.pt checkpoints first",
            });
        };
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer: require(
                dir,
                "tokenizer.json",
                "a fast-tokenizer file is needed (save the tokenizer with transformers to create it)",
            )?,
            tokenizer_config: existing(dir, "tokenizer_config.json"),
            generation_config: existing(dir, "generation_config.json"),
            chat_template_jinja: existing(dir, "chat_template.jinja"),
        })
    }
}
