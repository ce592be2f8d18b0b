//! `POST /v1/completions`: prompts as a string, a list of strings, token ids
//! or lists of token ids; `n` choices per prompt (choice index
//! `prompt * n + i`); streamed or not; `echo`; completions-format logprobs.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tandem_engine::serving::{RequestOutput, StopReason};
use tandem_engine::tokenizer::Tokenizer;

use super::blocking;
use super::errors::ApiError;
use super::generate::{self, finish_reason_str, UsageInfo};
use super::guided;
use super::json::GenerationJson;
use super::logprobs::CompletionLogprobs;
use super::sse::{self, ChunkWriter};
use super::validation::{DefaultMaxTokens, SamplingFields};
use super::{AppState, ResponseMeta, StreamOptions};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// Completions' own fields; the sampling knobs it shares with chat are
/// [`SamplingFields`], read from the same body. Fields not listed (`user`,
/// ...) are accepted and ignored, as in vLLM.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    pub best_of: Option<i64>,
    /// Top logprobs per token (chat spells it differently).
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub add_special_tokens: Option<bool>,
    pub suffix: Option<String>,
}

impl CompletionRequest {
    /// The shared knobs with completions' `logprobs`.
    fn sampling_fields(&self, sent: SamplingFields) -> SamplingFields {
        SamplingFields {
            max_tokens_param: "max_tokens",
            logprobs: self.logprobs,
            logprobs_param: "logprobs",
            ..sent
        }
    }

    /// Fields tandem accepts in the schema but cannot honour: refused, never
    /// silently dropped.
    fn refuse_unsupported(&self, sampling: &SamplingFields) -> Result<(), ApiError> {
        if self.echo == Some(true) && self.logprobs.is_some() {
            return Err(ApiError::invalid(
                "echo",
                "echo with logprobs needs prompt logprobs, which tandem does not compute yet; \
                 drop one of them",
            ));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid("suffix", "suffix is not supported"));
        }
        sampling.refuse_unsupported()?;
        if let Some(b) = self.best_of {
            let n = sampling.n;
            if Some(b) != n && !(b == 1 && n.is_none()) {
                return Err(ApiError::invalid(
                    "best_of",
                    format!(
                        "best_of must equal n; tandem returns every choice it samples (got {b})"
                    ),
                ));
            }
        }
        super::check_stream_options(self.stream, &self.stream_options)
    }
}

/// One prompt of a request: its tokens, and its text for `echo`.
struct TokenizedPrompt {
    ids: Vec<u32>,
    text: String,
}

impl Prompt {
    /// Each prompt's tokens and text (text prompts are tokenized, token
    /// prompts decoded), on the blocking pool.
    async fn tokenize(
        self,
        tok: Arc<Tokenizer>,
        add_special: bool,
    ) -> Result<Vec<TokenizedPrompt>, ApiError> {
        blocking::run(move || {
            let encode = |text: String| {
                let ids = tok.encode(&text, add_special).map_err(ApiError::internal)?;
                Ok::<_, ApiError>(TokenizedPrompt { ids, text })
            };
            let decode = |ids: Vec<u32>| {
                let text = tok.decode(&ids, false).unwrap_or_default();
                TokenizedPrompt { ids, text }
            };
            let prompts: Vec<_> = match self {
                Prompt::Text(t) => vec![encode(t)?],
                Prompt::Texts(ts) => ts.into_iter().map(encode).collect::<Result<_, _>>()?,
                Prompt::Tokens(ids) => vec![decode(ids)],
                Prompt::TokenLists(lists) => lists.into_iter().map(decode).collect(),
            };
            if prompts.is_empty() {
                return Err(ApiError::invalid("prompt", "prompt is an empty list"));
            }
            Ok(prompts)
        })
        .await
    }
}

#[derive(Debug, Serialize)]
struct CompletionResponse {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageInfo>,
}

#[derive(Debug, Serialize)]
struct CompletionChoice {
    index: usize,
    text: String,
    logprobs: Option<CompletionLogprobs>,
    finish_reason: Option<&'static str>,
    stop_reason: Option<StopReason>,
}

impl CompletionResponse {
    fn new(meta: &ResponseMeta, choices: Vec<CompletionChoice>, usage: Option<UsageInfo>) -> Self {
        CompletionResponse {
            id: meta.id.clone(),
            object: "text_completion",
            created: meta.created,
            model: meta.model.clone(),
            choices,
            usage,
        }
    }
}

/// `POST /v1/completions`.
pub async fn create(
    State(state): State<AppState>,
    GenerationJson {
        request: req,
        sampling,
    }: GenerationJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    state.model.check_name(req.model.as_deref())?;
    req.refuse_unsupported(&sampling)?;
    let validated = req
        .sampling_fields(sampling)
        .validate(state.model.limits(), DefaultMaxTokens::Fixed(16))?;
    guided::check(&state, &validated).await?;
    let add_special = req.add_special_tokens.unwrap_or(true);
    let prompts = req
        .prompt
        .tokenize(state.model.tokenizer.clone(), add_special)
        .await?;
    let mut echo = Vec::new();
    let mut requests = Vec::with_capacity(prompts.len());
    for TokenizedPrompt { ids, text } in prompts {
        requests.push(validated.requests(ids, "prompt")?);
        let shown = req.echo.unwrap_or(false).then_some(text);
        echo.extend(std::iter::repeat_n(shown, validated.n));
    }
    let launched = generate::launch(&state, requests)?;
    let meta = ResponseMeta::new("cmpl", state.model.name());
    let writer = Writer {
        tokenizer: state.model.tokenizer.clone(),
        logprobs: req.logprobs.is_some(),
        offsets: echo
            .iter()
            .map(|e| e.as_ref().map_or(0, |t| t.chars().count()))
            .collect(),
        echo,
        meta,
    };
    if req.stream.unwrap_or(false) {
        let events = sse::events(writer, launched, req.stream_options);
        return Ok(sse::response(events));
    }
    let (outputs, usage) = generate::collect(launched).await?;
    let mut writer = writer;
    let choices = outputs
        .iter()
        .enumerate()
        .map(|(index, out)| writer.choice(index, out))
        .collect();
    Ok(Json(CompletionResponse::new(&writer.meta, choices, Some(usage))).into_response())
}

/// Builds choices (whole or as stream deltas), carrying echo text and
/// logprob offsets across a choice's updates.
struct Writer {
    meta: ResponseMeta,
    tokenizer: Arc<Tokenizer>,
    logprobs: bool,
    /// Prompt text still to prepend, per choice (taken by its first update).
    echo: Vec<Option<String>>,
    offsets: Vec<usize>,
}

impl Writer {
    fn choice(&mut self, index: usize, out: &RequestOutput) -> CompletionChoice {
        let mut text = self.echo[index].take().unwrap_or_default();
        text.push_str(&out.text);
        let logprobs = self.logprobs.then(|| {
            let mut lp = CompletionLogprobs::default();
            lp.push(&self.tokenizer, &out.samples, &mut self.offsets[index]);
            lp
        });
        CompletionChoice {
            index,
            text,
            logprobs,
            finish_reason: out.finish_reason.map(finish_reason_str),
            stop_reason: out.stop_reason.clone(),
        }
    }
}

impl ChunkWriter for Writer {
    fn opening(&mut self, _num_choices: usize) -> Vec<axum::body::Bytes> {
        Vec::new()
    }

    fn update(&mut self, index: usize, out: &RequestOutput) -> Option<axum::body::Bytes> {
        let choice = self.choice(index, out);
        if choice.text.is_empty() && choice.finish_reason.is_none() && choice.logprobs.is_none() {
            return None;
        }
        Some(sse::event(&CompletionResponse::new(
            &self.meta,
            vec![choice],
            None,
        )))
    }

    fn usage(&self, usage: &UsageInfo) -> axum::body::Bytes {
        sse::event(&CompletionResponse::new(
            &self.meta,
            Vec::new(),
            Some(usage.clone()),
        ))
    }
}
