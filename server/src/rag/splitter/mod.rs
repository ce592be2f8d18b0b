//! Cuts a document into chunks for the index, as KAITO's RAGEngine does:
//! sentence-aware text splitting by default (KAITO: llama-index
//! `SentenceSplitter`, 1,024 tokens, overlap 200), and syntax-aware code
//! splitting when the document's metadata says `split_type: "code"` with a
//! `language`. Sizes are counted in the embedder's tokens, so a chunk's
//! size is what the embedder sees. Built on the `text-splitter` crate
//! (Unicode sentence/word boundaries; tree-sitter for code).

mod code;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};
use text_splitter::{ChunkConfig, ChunkSizer, CodeSplitter, TextSplitter};

pub use code::{CodeLanguage, SUPPORTED_LANGUAGES};

/// One piece of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub text: String,
    /// Byte offset of `text` in the document it came from.
    pub start_byte: usize,
}

/// Chunk size and overlap, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitConfig {
    pub chunk_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for SplitConfig {
    /// KAITO's (llama-index `SentenceSplitter` defaults).
    fn default() -> Self {
        SplitConfig {
            chunk_tokens: 1024,
            overlap_tokens: 200,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error(
        "metadata.split_type is \"code\" but metadata.language is missing; set it to one of: {}",
        SUPPORTED_LANGUAGES.join(", ")
    )]
    MissingLanguage,
    #[error(
        "metadata.language {language:?} is not supported for code splitting; use one of: {}",
        SUPPORTED_LANGUAGES.join(", ")
    )]
    UnsupportedLanguage { language: String },
    #[error("metadata.{field}: {message}")]
    InvalidMetadata {
        field: &'static str,
        message: String,
    },
    #[error("invalid split configuration: {0}")]
    InvalidConfig(String),
    #[error("code splitting failed: {0}")]
    Code(String),
}

impl SplitError {
    /// The request field to name in a 400; None when the server is to blame.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            SplitError::MissingLanguage | SplitError::UnsupportedLanguage { .. } => {
                Some("metadata.language")
            }
            SplitError::InvalidMetadata { field, .. } => Some(match *field {
                "split_type" => "metadata.split_type",
                _ => "metadata.language",
            }),
            SplitError::InvalidConfig(_) | SplitError::Code(_) => None,
        }
    }
}

/// Counts tokens with the caller's function (the embedder's tokenizer).
struct TokenCounter<'a>(&'a dyn Fn(&str) -> usize);

impl ChunkSizer for TokenCounter<'_> {
    fn size(&self, chunk: &str) -> usize {
        (self.0)(chunk)
    }
}

/// Sentence/token-aware by default; code splitting when `metadata` has
/// `split_type == "code"` and a supported `language`. Any other split_type
/// splits as text, as KAITO does. Empty or blank text gives no chunks.
pub fn split(
    text: &str,
    metadata: &Map<String, Value>,
    cfg: &SplitConfig,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Result<Vec<Chunk>, SplitError> {
    let language = code_language(metadata)?;
    if cfg.chunk_tokens == 0 || cfg.overlap_tokens >= cfg.chunk_tokens {
        return Err(SplitError::InvalidConfig(format!(
            "chunk size {} must be positive and larger than the overlap {}",
            cfg.chunk_tokens, cfg.overlap_tokens
        )));
    }
    let config = ChunkConfig::new(cfg.chunk_tokens)
        .with_overlap(cfg.overlap_tokens)
        .map_err(|e| SplitError::InvalidConfig(e.to_string()))?
        .with_sizer(TokenCounter(count_tokens));
    let pieces: Vec<(usize, &str)> = match language {
        None => TextSplitter::new(config).chunk_indices(text).collect(),
        Some(lang) => CodeSplitter::new(lang.grammar(), config)
            .map_err(|e| SplitError::Code(e.to_string()))?
            .chunk_indices(text)
            .collect(),
    };
    Ok(pieces
        .into_iter()
        .filter(|(_, t)| !t.trim().is_empty())
        .map(|(start_byte, t)| Chunk {
            text: t.to_string(),
            start_byte,
        })
        .collect())
}

/// The code language `metadata` asks for, or None for text splitting.
fn code_language(metadata: &Map<String, Value>) -> Result<Option<CodeLanguage>, SplitError> {
    let split_type = match metadata.get("split_type") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(SplitError::InvalidMetadata {
                field: "split_type",
                message: format!("must be a string such as \"code\", got {other}"),
            })
        }
    };
    if split_type != "code" {
        return Ok(None);
    }
    match metadata.get("language") {
        None | Some(Value::Null) => Err(SplitError::MissingLanguage),
        Some(Value::String(s)) if s.trim().is_empty() => Err(SplitError::MissingLanguage),
        Some(Value::String(s)) => {
            CodeLanguage::parse(s)
                .map(Some)
                .ok_or_else(|| SplitError::UnsupportedLanguage {
                    language: s.clone(),
                })
        }
        Some(other) => Err(SplitError::InvalidMetadata {
            field: "language",
            message: format!(
                "must be a string (one of {}), got {other}",
                SUPPORTED_LANGUAGES.join(", ")
            ),
        }),
    }
}
