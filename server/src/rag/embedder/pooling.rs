//! How a sentence-transformers model turns token states into one vector,
//! read from its own files as sentence-transformers does: `modules.json`
//! names the Pooling module's folder, whose `config.json` picks the mode
//! (all-MiniLM-L6-v2: mean; bge-small-en-v1.5: CLS), and
//! `sentence_bert_config.json` gives `max_seq_length`.

use std::path::Path;

use candle_core::{DType, Result as CandleResult, Tensor, D};
use serde::Deserialize;

use super::EmbedError;

/// One pooling mode (sentence-transformers' `pooling_mode_*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Cls,
    Mean,
    Max,
    MeanSqrtLen,
}

/// What the embedder reads from a model directory besides the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceConfig {
    pub pooling: Pooling,
    /// Tokens per text including [CLS]/[SEP]; longer input is truncated.
    pub max_seq_length: usize,
    /// Whether `modules.json` ends in a Normalize module (we always normalize;
    /// recorded so a model without it is visible in logs).
    pub normalize: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct SentenceBertFile {
    max_seq_length: Option<usize>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|e| EmbedError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| EmbedError::Load {
        path: path.to_path_buf(),
        message: format!("not the expected JSON: {e}"),
    })
}

impl SentenceConfig {
    /// Reads the pooling and length settings of the model in `dir`.
    /// `model_limit` is the longest input the weights allow
    /// (`max_position_embeddings`); without `sentence_bert_config.json` it is
    /// the length limit, as sentence-transformers falls back to the model's.
    pub fn read(dir: &Path, model_limit: usize) -> Result<Self, EmbedError> {
        let modules_path = dir.join("modules.json");
        let (pooling_dir, normalize) = if modules_path.exists() {
            let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
            let pooling = modules
                .iter()
                .find(|m| m.kind.ends_with("models.Pooling"))
                .map(|m| dir.join(&m.path));
            let normalize = modules.iter().any(|m| m.kind.ends_with("models.Normalize"));
            (pooling, normalize)
        } else {
            let default = dir.join("1_Pooling");
            (default.exists().then_some(default), false)
        };
        // sentence-transformers builds a plain HF model with mean pooling.
        let pooling = match pooling_dir {
            Some(p) => parse_pooling(&read_json(&p.join("config.json"))?, &p)?,
            None => Pooling::Mean,
        };
        let sbert_path = dir.join("sentence_bert_config.json");
        let configured = if sbert_path.exists() {
            read_json::<SentenceBertFile>(&sbert_path)?.max_seq_length
        } else {
            None
        };
        let max_seq_length = configured.unwrap_or(model_limit).min(model_limit);
        if max_seq_length < 3 {
            return Err(EmbedError::Load {
                path: sbert_path,
                message: format!("max_seq_length {max_seq_length} leaves no room for text"),
            });
        }
        Ok(SentenceConfig {
            pooling,
            max_seq_length,
            normalize,
        })
    }
}

fn parse_pooling(file: &PoolingFile, dir: &Path) -> Result<Pooling, EmbedError> {
    let unsupported = |what: &str| EmbedError::Load {
        path: dir.join("config.json"),
        message: format!("{what} pooling is not supported (cls, mean, max, mean_sqrt_len are)"),
    };
    if file.pooling_mode_weightedmean_tokens {
        return Err(unsupported("weighted-mean"));
    }
    if file.pooling_mode_lasttoken {
        return Err(unsupported("last-token"));
    }
    let modes = [
        (file.pooling_mode_cls_token, Pooling::Cls),
        (file.pooling_mode_mean_tokens, Pooling::Mean),
        (file.pooling_mode_max_tokens, Pooling::Max),
        (file.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
    ];
    let mut chosen = modes.iter().filter(|(on, _)| *on).map(|(_, m)| *m);
    match (chosen.next(), chosen.next()) {
        (Some(mode), None) => Ok(mode),
        (None, _) => Err(EmbedError::Load {
            path: dir.join("config.json"),
            message: "no pooling_mode_* flag is true".into(),
        }),
        (Some(_), Some(_)) => Err(unsupported("concatenated multi-mode")),
    }
}

impl Pooling {
    /// One vector per text from `hidden` [batch, len, dim] and `mask`
    /// [batch, len] (1 = token), padding excluded as sentence-transformers does.
    pub fn apply(self, hidden: &Tensor, mask: &Tensor) -> CandleResult<Tensor> {
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?; // [b, len, 1]
        match self {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // [b, dim]
                let counts = mask.sum(1)?.clamp(1e-9, f32::MAX as f64)?; // [b, 1]
                let divisor = if self == Pooling::Mean {
                    counts
                } else {
                    counts.sqrt()?
                };
                summed.broadcast_div(&divisor)
            }
            Pooling::Max => {
                // Padding must never win the max: push it far below any state.
                let penalty = ((mask - 1.0)? * 1e9)?;
                hidden.broadcast_add(&penalty)?.max(1)
            }
        }
    }
}

/// Scales each row of `xs` [batch, dim] to unit L2 length.
pub fn l2_normalize(xs: &Tensor) -> CandleResult<Tensor> {
    let norms = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f32::MAX as f64)?;
    xs.broadcast_div(&norms)
}
