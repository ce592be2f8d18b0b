//! `generation_config.json`: the checkpoint's stop ids and default sampling.

use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

use crate::config::token_ids;
use crate::error::{read_json, Result};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationDefaults {
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
}

#[derive(Deserialize)]
struct Raw {
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    repetition_penalty: Option<f32>,
    do_sample: Option<bool>,
}

impl GenerationDefaults {
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: Raw = read_json(path, "a generation config")?;
        // transformers ignores sampling knobs unless do_sample is set; so do we.
        let sampling = raw.do_sample.unwrap_or(true);
        Ok(GenerationDefaults {
            bos_token_id: token_ids(&raw.bos_token_id).first().copied(),
            eos_token_ids: token_ids(&raw.eos_token_id),
            temperature: raw.temperature.filter(|_| sampling),
            top_p: raw.top_p.filter(|_| sampling),
            top_k: raw.top_k.filter(|_| sampling),
            repetition_penalty: raw.repetition_penalty,
        })
    }
}
