//! `POST /v1/chat/completions`: messages rendered with the model's own chat
//! template, then generated like a completion; streamed as
//! `chat.completion.chunk`s whose first delta carries the role.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tandem_engine::serving::{RequestOutput, StopReason};
use tandem_engine::tokenizer::Tokenizer;

use super::chat_template::{tokenize_chat, ChatMessage};
use super::errors::ApiError;
use super::generate::{self, finish_reason_str, UsageInfo};
use super::guided;
use super::json::GenerationJson;
use super::logprobs::ChatLogprobs;
use super::rag_chat;
use super::sse::{self, ChunkWriter};
use super::validation::{DefaultMaxTokens, SamplingFields, Validated};
use super::{AppState, ResponseMeta, StreamOptions};
use crate::rag::types::NodeWithScore;

/// Chat's own fields; the sampling knobs it shares with completions are
/// [`SamplingFields`], read from the same body. Fields not listed (`user`,
/// `name` on messages, ...) are accepted and ignored, as in vLLM.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// Overrides the shared `max_tokens` (OpenAI's newer name).
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub add_generation_prompt: Option<bool>,
    pub tools: Option<Vec<serde_json::Value>>,
    /// KAITO RAGEngine: answer from this index (see `rag_chat`).
    pub index_name: Option<String>,
    pub context_token_ratio: Option<f64>,
    pub functions: Option<serde_json::Value>,
}

impl ChatCompletionRequest {
    /// The shared knobs as chat spells them: `max_completion_tokens` over
    /// `max_tokens`, and `logprobs` a flag with the number in `top_logprobs`.
    fn sampling_fields(&self, sent: SamplingFields) -> SamplingFields {
        let (max_tokens, max_tokens_param) = match self.max_completion_tokens {
            Some(m) => (Some(m), "max_completion_tokens"),
            None => (sent.max_tokens, "max_tokens"),
        };
        let wants_logprobs = self.logprobs.unwrap_or(false);
        SamplingFields {
            max_tokens,
            max_tokens_param,
            logprobs: wants_logprobs.then(|| self.top_logprobs.unwrap_or(0)),
            logprobs_param: "top_logprobs",
            ..sent
        }
    }

    fn rag_request<'a>(
        &'a self,
        index_name: &'a str,
        validated: &Validated,
    ) -> rag_chat::RagRequest<'a> {
        rag_chat::RagRequest {
            index_name,
            context_token_ratio: self.context_token_ratio,
            max_tokens: validated.max_tokens,
            messages: &self.messages,
            n: validated.n,
            has_functions: self.functions.as_ref().is_some_and(|f| !f.is_null()),
        }
    }

    fn refuse_unsupported(&self, sampling: &SamplingFields) -> Result<(), ApiError> {
        if self.top_logprobs.is_some() && self.logprobs != Some(true) {
            return Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs requires logprobs to be true",
            ));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::invalid("tools", "tool calling is not supported"));
        }
        sampling.refuse_unsupported()?;
        super::check_stream_options(self.stream, &self.stream_options)
    }
}

#[derive(Debug, Serialize)]
struct ChatResponse {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    choices: Vec<ChatChoice>,
    usage: UsageInfo,
    /// Only with `index_name`: the chunks used (`null` when none were).
    #[serde(skip_serializing_if = "Option::is_none")]
    source_nodes: Option<Option<Vec<NodeWithScore>>>,
}

#[derive(Debug, Serialize)]
struct ChatChoice {
    index: usize,
    message: AssistantMessage,
    logprobs: Option<ChatLogprobs>,
    finish_reason: Option<&'static str>,
    stop_reason: Option<StopReason>,
}

#[derive(Debug, Serialize)]
struct AssistantMessage {
    role: &'static str,
    content: String,
    tool_calls: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct ChatChunk {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_nodes: Option<Option<Vec<NodeWithScore>>>,
}

#[derive(Debug, Serialize)]
struct ChunkChoice {
    index: usize,
    delta: Delta,
    logprobs: Option<ChatLogprobs>,
    finish_reason: Option<&'static str>,
    stop_reason: Option<StopReason>,
}

#[derive(Debug, Default, Serialize)]
struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

/// `POST /v1/chat/completions`, with KAITO's `index_name` for RAG.
pub async fn create(
    State(state): State<AppState>,
    GenerationJson {
        request: req,
        sampling,
    }: GenerationJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    state.model.check_name(req.model.as_deref())?;
    req.refuse_unsupported(&sampling)?;
    let validated = req
        .sampling_fields(sampling)
        .validate(state.model.limits(), DefaultMaxTokens::Remaining)?;
    guided::check(&state, validated.params.guided.as_ref()).await?;
    let (messages, rag_sources) = match &req.index_name {
        Some(index_name) => {
            let rag = req.rag_request(index_name, &validated);
            let prepared = rag_chat::prepare(&state, rag).await?;
            (prepared.messages, Some(prepared.sources))
        }
        None => (req.messages, None),
    };
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
    let prompt = tokenize_chat(&state.model, messages, add_generation_prompt, false).await?;
    let requests = validated.requests(prompt, "messages")?;
    let launched = generate::launch(&state, vec![requests])?;
    let writer = Writer {
        meta: ResponseMeta::new("chatcmpl", state.model.name()),
        tokenizer: state.model.tokenizer.clone(),
        logprobs: req.logprobs == Some(true),
        source_nodes: rag_sources.map(rag_chat::Sources::answered),
    };
    if req.stream.unwrap_or(false) {
        let events = sse::events(writer, launched, req.stream_options);
        return Ok(sse::response(events));
    }
    let (outputs, usage) = generate::collect(launched).await?;
    let choices = outputs
        .into_iter()
        .enumerate()
        .map(|(index, f)| ChatChoice {
            index,
            logprobs: writer.logprobs(&f.samples),
            message: AssistantMessage {
                role: "assistant",
                content: f.text,
                tool_calls: Vec::new(),
            },
            finish_reason: f.finish_reason.map(finish_reason_str),
            stop_reason: f.stop_reason,
        })
        .collect();
    let m = &writer.meta;
    Ok(Json(ChatResponse {
        id: m.id.clone(),
        object: "chat.completion",
        created: m.created,
        model: m.model.clone(),
        choices,
        usage,
        source_nodes: writer.source_nodes,
    })
    .into_response())
}

struct Writer {
    meta: ResponseMeta,
    tokenizer: Arc<Tokenizer>,
    logprobs: bool,
    /// RAG sources; streamed in the first chunk only.
    source_nodes: Option<Option<Vec<NodeWithScore>>>,
}

impl Writer {
    fn logprobs(&self, samples: &[tandem_engine::sampler::SampledToken]) -> Option<ChatLogprobs> {
        self.logprobs.then(|| {
            let mut lp = ChatLogprobs::default();
            lp.push(&self.tokenizer, samples);
            lp
        })
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<UsageInfo>) -> Bytes {
        self.chunk_with_sources(choices, usage, None)
    }

    fn chunk_with_sources(
        &self,
        choices: Vec<ChunkChoice>,
        usage: Option<UsageInfo>,
        source_nodes: Option<Option<Vec<NodeWithScore>>>,
    ) -> Bytes {
        sse::event(&ChatChunk {
            id: self.meta.id.clone(),
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices,
            usage,
            source_nodes,
        })
    }
}

impl ChunkWriter for Writer {
    fn opening(&mut self, num_choices: usize) -> Vec<Bytes> {
        (0..num_choices)
            .map(|index| {
                let delta = Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                };
                let choice = ChunkChoice {
                    index,
                    delta,
                    logprobs: None,
                    finish_reason: None,
                    stop_reason: None,
                };
                let sources = if index == 0 {
                    self.source_nodes.take()
                } else {
                    None
                };
                self.chunk_with_sources(vec![choice], None, sources)
            })
            .collect()
    }

    fn update(&mut self, index: usize, out: &RequestOutput) -> Option<Bytes> {
        if out.text.is_empty() && out.finish_reason.is_none() && !self.logprobs {
            return None;
        }
        let choice = ChunkChoice {
            index,
            delta: Delta {
                role: None,
                content: Some(out.text.clone()),
            },
            logprobs: self.logprobs(&out.samples),
            finish_reason: out.finish_reason.map(finish_reason_str),
            stop_reason: out.stop_reason.clone(),
        };
        Some(self.chunk(vec![choice], None))
    }

    fn usage(&self, usage: &UsageInfo) -> Bytes {
        self.chunk(Vec::new(), Some(usage.clone()))
    }
}
