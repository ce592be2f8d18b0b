//! PLACEHOLDER until branch rag-embed lands: the interface agreed in
//! /work/notes/rag-interface.md. The merge of rag-embed replaces it.

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub text: String,
    pub start_byte: usize,
}

#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub struct SplitConfig {
    pub chunk_tokens: usize,
    pub overlap_tokens: usize,
}

#[derive(Debug, thiserror::Error)]
#[allow(dead_code)]
pub enum SplitError {
    #[error("{0}")]
    Failed(String),
}

impl SplitError {
    /// The request field to name in a 400; None for server-side errors.
    pub fn param(&self) -> Option<&'static str> {
        None
    }
}

/// Paragraph-packing stand-in: paragraphs joined until `chunk_tokens`.
#[allow(dead_code)]
pub fn split(
    text: &str,
    _metadata: &Map<String, Value>,
    cfg: &SplitConfig,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Result<Vec<Chunk>, SplitError> {
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for para in text.split_inclusive("\n\n") {
        let end = pos + para.len();
        if end > start && count_tokens(&text[start..end]) > cfg.chunk_tokens && pos > start {
            chunks.push(Chunk {
                text: text[start..pos].to_string(),
                start_byte: start,
            });
            start = pos;
        }
        pos = end;
    }
    if start < text.len() || chunks.is_empty() {
        chunks.push(Chunk {
            text: text[start..].to_string(),
            start_byte: start,
        });
    }
    Ok(chunks)
}
