//! `POST /tokenize` and `POST /detokenize`, shaped as vLLM's: a prompt or
//! chat messages in, token ids (and optionally their strings) out. The
//! tokenizer runs on the blocking pool (see [`super::blocking`]).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::chat_template::{tokenize_chat, ChatInput, ChatMessage};
use super::errors::ApiError;
use super::json::ApiJson;
use super::{blocking, AppState};

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    /// Either `prompt` ...
    pub prompt: Option<String>,
    /// ... or `messages` (rendered with the chat template).
    pub messages: Option<Vec<ChatMessage>>,
    /// Default true for `prompt`, false for `messages` (as vLLM).
    pub add_special_tokens: Option<bool>,
    pub add_generation_prompt: Option<bool>,
    pub return_token_strs: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct TokenizeResponse {
    count: usize,
    max_model_len: usize,
    tokens: Vec<u32>,
    token_strs: Option<Vec<String>>,
}

pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let model = state.model.clone();
    model.check_name(req.model.as_deref())?;
    let tokens = match (req.prompt, req.messages) {
        (Some(prompt), None) => {
            let add_special = req.add_special_tokens.unwrap_or(true);
            let tok = model.tokenizer.clone();
            blocking::run(move || tok.encode(&prompt, add_special).map_err(ApiError::internal))
                .await?
        }
        (None, Some(messages)) => {
            let input = ChatInput {
                messages,
                tools: None,
                add_generation_prompt: req.add_generation_prompt.unwrap_or(true),
            };
            let add_special = req.add_special_tokens.unwrap_or(false);
            tokenize_chat(&model, input, add_special).await?
        }
        _ => {
            return Err(ApiError::invalid(
                "prompt",
                "send exactly one of `prompt` (text) or `messages` (chat)",
            ))
        }
    };
    let (tokens, token_strs) = if req.return_token_strs.unwrap_or(false) {
        let tok = model.tokenizer.clone();
        blocking::run(move || {
            let strs = tokens
                .iter()
                .map(|&id| tok.id_to_token(id).unwrap_or_default())
                .collect();
            Ok((tokens, Some(strs)))
        })
        .await?
    } else {
        (tokens, None)
    };
    Ok(Json(TokenizeResponse {
        count: tokens.len(),
        max_model_len: model.max_model_len,
        tokens,
        token_strs,
    }))
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct DetokenizeResponse {
    prompt: String,
}

pub async fn detokenize(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let model = &state.model;
    model.check_name(req.model.as_deref())?;
    if let Some(&bad) = req.tokens.iter().find(|&&t| t as usize >= model.vocab_size) {
        return Err(ApiError::invalid(
            "tokens",
            format!(
                "tokens contains {bad}, outside the vocabulary of {} tokens",
                model.vocab_size
            ),
        ));
    }
    let tok = model.tokenizer.clone();
    let prompt =
        blocking::run(move || tok.decode(&req.tokens, false).map_err(ApiError::internal)).await?;
    Ok(Json(DetokenizeResponse { prompt }))
}
