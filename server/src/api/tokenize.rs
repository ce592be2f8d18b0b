//! `POST /tokenize` and `POST /detokenize`, shaped as vLLM's: a prompt or
//! chat messages in, token ids (and optionally their strings) out.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::chat_template::{render_prompt, ChatMessage};
use super::errors::ApiError;
use super::json::ApiJson;
use super::AppState;

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
    let model = &state.model;
    model.check_name(req.model.as_deref())?;
    let tok = &model.tokenizer;
    let tokens = match (&req.prompt, &req.messages) {
        (Some(prompt), None) => tok
            .encode(prompt, req.add_special_tokens.unwrap_or(true))
            .map_err(ApiError::internal)?,
        (None, Some(messages)) => {
            let text = render_prompt(model, messages, req.add_generation_prompt.unwrap_or(true))?;
            tok.encode(&text, req.add_special_tokens.unwrap_or(false))
                .map_err(ApiError::internal)?
        }
        _ => {
            return Err(ApiError::invalid(
                "prompt",
                "send exactly one of `prompt` (text) or `messages` (chat)",
            ))
        }
    };
    let token_strs = req.return_token_strs.unwrap_or(false).then(|| {
        tokens
            .iter()
            .map(|&id| tok.id_to_token(id).unwrap_or_default())
            .collect()
    });
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
    let prompt = model
        .tokenizer
        .decode(&req.tokens, false)
        .map_err(ApiError::internal)?;
    Ok(Json(DetokenizeResponse { prompt }))
}
