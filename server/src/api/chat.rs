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

use super::chat_template::{tokenize_chat, ChatInput, ChatMessage};
use super::errors::ApiError;
use super::generate::{self, finish_reason_str, UsageInfo};
use super::guided;
use super::json::GenerationJson;
use super::logprobs::ChatLogprobs;
use super::rag_chat;
use super::sse::{self, ChunkWriter};
use super::tool_parser::{self, CallDelta, ToolCallFormat, ToolCallParser};
use super::tools::{ToolFields, ToolRequest};
use super::validation::{DefaultMaxTokens, SamplingFields, Validated};
use super::{AppState, ResponseMeta, StreamOptions};
use crate::rag::types::NodeWithScore;

/// Chat's own fields; the sampling knobs it shares with completions are
/// [`SamplingFields`], read from the same body. Fields not listed (`user`,
/// ...) are accepted and ignored, as in vLLM.
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
    /// Tool calling ([`super::tools`]); `functions` and `function_call`
    /// are the legacy spelling.
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
    pub functions: Option<serde_json::Value>,
    pub function_call: Option<serde_json::Value>,
    /// KAITO RAGEngine: answer from this index (see `rag_chat`).
    pub index_name: Option<String>,
    pub context_token_ratio: Option<f64>,
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
            has_functions: [&self.functions, &self.tools]
                .iter()
                .any(|f| f.as_ref().is_some_and(|f| !f.is_null())),
        }
    }

    fn tool_fields(&self) -> ToolFields<'_> {
        ToolFields {
            tools: self.tools.as_ref(),
            tool_choice: self.tool_choice.as_ref(),
            parallel_tool_calls: self.parallel_tool_calls,
            functions: self.functions.as_ref(),
            function_call: self.function_call.as_ref(),
        }
    }

    fn refuse_unsupported(&self, sampling: &SamplingFields) -> Result<(), ApiError> {
        if self.top_logprobs.is_some() && self.logprobs != Some(true) {
            return Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs requires logprobs to be true",
            ));
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
    /// `null` when the answer is only tool calls.
    content: Option<String>,
    tool_calls: Vec<ToolCallOut>,
    /// Legacy `functions` requests: the call, instead of `tool_calls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionOut>,
}

/// A tool call, whole or (streamed) in pieces: the first piece of a call
/// carries its id, type and name, later ones only arguments.
#[derive(Debug, Serialize)]
struct ToolCallOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionOut,
}

#[derive(Debug, Serialize)]
struct FunctionOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<String>,
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionOut>,
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
    let tools = req.tool_fields().read()?;
    let mut validated = req
        .sampling_fields(sampling)
        .validate(state.model.limits(), DefaultMaxTokens::Remaining)?;
    if let Some(t) = &tools {
        constrain_to_calls(&state, t, &mut validated).await?;
    }
    guided::check(&state, &validated).await?;
    let (messages, rag_sources) = match &req.index_name {
        Some(index_name) => {
            let rag = req.rag_request(index_name, &validated);
            let prepared = rag_chat::prepare(&state, rag).await?;
            (prepared.messages, Some(prepared.sources))
        }
        None => (req.messages, None),
    };
    let input = ChatInput {
        messages,
        tools: tools.as_ref().and_then(ToolRequest::template_tools),
        add_generation_prompt: req.add_generation_prompt.unwrap_or(true),
    };
    let prompt = tokenize_chat(&state.model, input, false).await?;
    let requests = validated.requests(prompt, "messages")?;
    let launched = generate::launch(&state, vec![requests])?;
    let writer = Writer {
        meta: ResponseMeta::new("chatcmpl", state.model.name()),
        tokenizer: state.model.tokenizer.clone(),
        logprobs: req.logprobs == Some(true),
        source_nodes: rag_sources.map(rag_chat::Sources::answered),
        calls: tools
            .filter(ToolRequest::parses_output)
            .map(|t| CallReading {
                format: state.model.tool_call_format,
                legacy: t.legacy,
                parsers: Vec::new(),
            }),
    };
    if req.stream.unwrap_or(false) {
        let events = sse::events(writer, launched, req.stream_options);
        return Ok(sse::response(events));
    }
    let (outputs, usage) = generate::collect(launched).await?;
    let choices = outputs
        .into_iter()
        .enumerate()
        .map(|(index, f)| {
            let (message, called) = writer.message(f.text);
            ChatChoice {
                index,
                logprobs: writer.logprobs(&f.samples),
                message,
                finish_reason: writer.finish_reason(f.finish_reason, called),
                stop_reason: f.stop_reason,
            }
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

/// `required` or a named function: the output is constrained to calls.
async fn constrain_to_calls(
    state: &AppState,
    tools: &ToolRequest,
    validated: &mut Validated,
) -> Result<(), ApiError> {
    let Some(constraint) = tools.check(state).await? else {
        return Ok(());
    };
    if validated.params.guided.is_some() {
        let param = if tools.legacy {
            "function_call"
        } else {
            "tool_choice"
        };
        return Err(ApiError::invalid(
            param,
            format!(
                "{param} forces a call, which cannot be combined with response_format or \
                 guided_*; drop one of them"
            ),
        ));
    }
    validated.params.guided = Some(constraint);
    validated.guided_field = if tools.legacy { "functions" } else { "tools" };
    Ok(())
}

/// Reading tool calls out of each choice's text.
struct CallReading {
    format: ToolCallFormat,
    /// Answer with `function_call` (the first call only).
    legacy: bool,
    /// One per choice (streaming).
    parsers: Vec<ToolCallParser>,
}

struct Writer {
    meta: ResponseMeta,
    tokenizer: Arc<Tokenizer>,
    logprobs: bool,
    /// RAG sources; streamed in the first chunk only.
    source_nodes: Option<Option<Vec<NodeWithScore>>>,
    /// With tools (and `tool_choice` other than `none`).
    calls: Option<CallReading>,
}

impl Writer {
    /// A whole choice's message; true when it made calls.
    fn message(&self, text: String) -> (AssistantMessage, bool) {
        let mut message = AssistantMessage {
            role: "assistant",
            content: Some(text),
            tool_calls: Vec::new(),
            function_call: None,
        };
        let Some(reading) = &self.calls else {
            return (message, false);
        };
        let text = message.content.take().unwrap_or_default();
        let parsed = tool_parser::parse_output(reading.format, &text);
        message.content = parsed.content;
        let called = !parsed.calls.is_empty();
        let mut calls = parsed.calls.into_iter().map(|c| ToolCallOut {
            index: None,
            id: Some(c.id),
            kind: Some("function"),
            function: FunctionOut {
                name: Some(c.name),
                arguments: Some(c.arguments),
            },
        });
        if reading.legacy {
            message.function_call = calls.next().map(|c| c.function);
        } else {
            message.tool_calls = calls.collect();
        }
        (message, called)
    }

    /// `tool_calls` (legacy: `function_call`) for an answer that called.
    fn finish_reason(
        &self,
        reason: Option<tandem_engine::sequence::FinishReason>,
        called: bool,
    ) -> Option<&'static str> {
        let reason = reason.map(finish_reason_str);
        match (&self.calls, reason) {
            (Some(r), Some("stop")) if called && r.legacy => Some("function_call"),
            (Some(_), Some("stop")) if called => Some("tool_calls"),
            _ => reason,
        }
    }

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

impl Writer {
    /// One streamed update as a delta (text through the choice's call
    /// parser, with tools); true once the choice has made a call.
    fn delta(&mut self, index: usize, out: &RequestOutput) -> (Delta, bool) {
        let Some(reading) = &mut self.calls else {
            let content =
                (!out.text.is_empty() || out.finish_reason.is_some()).then(|| out.text.clone());
            return (
                Delta {
                    content,
                    ..Delta::default()
                },
                false,
            );
        };
        let parser = &mut reading.parsers[index];
        let mut parsed = parser.push(&out.text);
        if out.finish_reason.is_some() {
            let last = parser.finish();
            parsed.content.push_str(&last.content);
            parsed.calls.extend(last.calls);
        }
        let called = parser.called();
        let mut delta = Delta {
            content: (!parsed.content.is_empty()).then_some(parsed.content),
            ..Delta::default()
        };
        let mut pieces = merge_pieces(parsed.calls).into_iter().map(|c| ToolCallOut {
            kind: c.id.is_some().then_some("function"),
            index: Some(c.index),
            id: c.id,
            function: FunctionOut {
                name: c.name,
                arguments: Some(c.arguments),
            },
        });
        if reading.legacy {
            // The first call only (merge_pieces left one entry per call).
            delta.function_call = pieces.find(|p| p.index == Some(0)).map(|p| p.function);
        } else {
            delta.tool_calls = pieces.collect();
        }
        (delta, called)
    }
}

/// One entry per call in a chunk: pieces of the same call that arrived
/// together are joined.
fn merge_pieces(deltas: Vec<CallDelta>) -> Vec<CallDelta> {
    let mut out: Vec<CallDelta> = Vec::with_capacity(deltas.len());
    for d in deltas {
        match out.last_mut() {
            Some(last) if last.index == d.index && d.id.is_none() => {
                last.arguments.push_str(&d.arguments)
            }
            _ => out.push(d),
        }
    }
    out
}

impl ChunkWriter for Writer {
    fn opening(&mut self, num_choices: usize) -> Vec<Bytes> {
        if let Some(reading) = &mut self.calls {
            reading.parsers = (0..num_choices)
                .map(|_| ToolCallParser::new(reading.format))
                .collect();
        }
        (0..num_choices)
            .map(|index| {
                let delta = Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    ..Delta::default()
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
        let (delta, called) = self.delta(index, out);
        let empty = delta.content.is_none() && delta.tool_calls.is_empty();
        if empty && delta.function_call.is_none() && out.finish_reason.is_none() && !self.logprobs {
            return None;
        }
        let choice = ChunkChoice {
            index,
            delta,
            logprobs: self.logprobs(&out.samples),
            finish_reason: self.finish_reason(out.finish_reason, called),
            stop_reason: out.stop_reason.clone(),
        };
        Some(self.chunk(vec![choice], None))
    }

    fn usage(&self, usage: &UsageInfo) -> Bytes {
        self.chunk(Vec::new(), Some(usage.clone()))
    }
}
