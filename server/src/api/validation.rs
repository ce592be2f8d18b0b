//! Request validation: the generation knobs completions and chat share, as
//! the client sent them, checked and turned into engine requests. Every
//! error names its field. Model defaults from `generation_config.json` fill
//! the knobs a request leaves out, as vLLM does.

use serde::Deserialize;
use tandem_engine::generation_config::GenerationDefaults;
use tandem_engine::sampler::{SamplingParams, MAX_LOGPROBS};
use tandem_engine::sequence::{Request, StopConditions};
use tandem_engine::serving::ServingRequest;

use super::errors::ApiError;

/// Most choices one request may ask for (`n`).
pub const MAX_N: i64 = 128;

/// `stop`: one string or a list.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// How many tokens to generate when the request does not say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DefaultMaxTokens {
    /// Completions: OpenAI's and vLLM's default of 16.
    Fixed(usize),
    /// Chat: whatever the context window leaves after the prompt.
    Remaining,
}

/// What validation needs to know about the model.
#[derive(Clone, Copy)]
pub struct Limits<'a> {
    pub max_model_len: usize,
    pub vocab_size: usize,
    pub defaults: &'a GenerationDefaults,
}

/// The knobs completions and chat share, as sent: the one declaration of
/// them. Read from the request body beside each route's own fields
/// ([`super::json::GenerationJson`]); the route then fills the three
/// fields that are not read, which it spells its own way.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub max_tokens: Option<i64>,
    /// `max_tokens` or, for chat, `max_completion_tokens` when that was set.
    #[serde(skip)]
    pub max_tokens_param: &'static str,
    pub min_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub n: Option<i64>,
    pub stop: Option<Stop>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// Top logprobs per token; `None` returns no logprobs at all. Not read
    /// here: completions sends the number as `logprobs`, chat a flag
    /// `logprobs` and the number as `top_logprobs`.
    #[serde(skip)]
    pub logprobs: Option<i64>,
    /// `logprobs` (completions) or `top_logprobs` (chat).
    #[serde(skip)]
    pub logprobs_param: &'static str,
    pub ignore_eos: Option<bool>,
    pub include_stop_str_in_output: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    /// Read to be refused: tandem biases no logits.
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// Structured outputs ([`super::guided`]): OpenAI's field and vLLM's.
    pub response_format: Option<serde_json::Value>,
    pub guided_json: Option<serde_json::Value>,
    pub guided_regex: Option<String>,
    /// Read to be refused (the schema's `x-guidance` says it instead).
    pub guided_whitespace_pattern: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    pub guided_grammar: Option<String>,
}

/// Knobs that passed validation; [`Validated::requests`] adds a prompt.
#[derive(Clone, Debug)]
pub struct Validated {
    pub n: usize,
    pub params: SamplingParams,
    /// The request field `params.guided` came from, for its errors.
    pub guided_field: &'static str,
    pub max_tokens: Option<usize>,
    max_tokens_param: &'static str,
    default_max_tokens: DefaultMaxTokens,
    min_tokens: usize,
    stop: Vec<String>,
    stop_token_ids: Vec<u32>,
    ignore_eos: bool,
    include_stop_str_in_output: bool,
    skip_special_tokens: bool,
    max_model_len: usize,
    vocab_size: usize,
}

fn must(ok: bool, param: &str, message: impl FnOnce() -> String) -> Result<(), ApiError> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(param, message()))
    }
}

impl SamplingFields {
    /// Knobs tandem reads but cannot honour: refused, never silently
    /// dropped. Each route calls it among its own such checks.
    pub fn refuse_unsupported(&self) -> Result<(), ApiError> {
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(ApiError::invalid(
                "logit_bias",
                "logit_bias is not supported",
            ));
        }
        if self.guided_whitespace_pattern.is_some() {
            return Err(ApiError::invalid(
                "guided_whitespace_pattern",
                "guided_whitespace_pattern is not supported; put \"x-guidance\": \
                 {\"whitespace_pattern\": ...} in the JSON schema instead",
            ));
        }
        Ok(())
    }

    pub fn validate(
        &self,
        limits: Limits<'_>,
        default_max_tokens: DefaultMaxTokens,
    ) -> Result<Validated, ApiError> {
        let n = self.n.unwrap_or(1);
        must((1..=MAX_N).contains(&n), "n", || {
            format!("n must be in [1, {MAX_N}], got {n}")
        })?;
        let mt_param = if self.max_tokens_param.is_empty() {
            "max_tokens"
        } else {
            self.max_tokens_param
        };
        if let Some(m) = self.max_tokens {
            must(m >= 1, mt_param, || {
                format!("{mt_param} must be at least 1, got {m}")
            })?;
        }
        let min_tokens = self.min_tokens.unwrap_or(0);
        must(min_tokens >= 0, "min_tokens", || {
            format!("min_tokens must be at least 0, got {min_tokens}")
        })?;
        let top_k = match self.top_k {
            None | Some(0) | Some(-1) => None,
            Some(k) if k > 0 => Some(k as usize),
            Some(k) => {
                return Err(ApiError::invalid(
                    "top_k",
                    format!("top_k must be -1 (disabled) or at least 1, got {k}"),
                ))
            }
        };
        let lp_param = if self.logprobs_param.is_empty() {
            "logprobs"
        } else {
            self.logprobs_param
        };
        let logprobs = match self.logprobs {
            None => None,
            Some(k) if (0..=MAX_LOGPROBS as i64).contains(&k) => Some(k as usize),
            Some(k) => {
                return Err(ApiError::invalid(
                    lp_param,
                    format!("{lp_param} must be in [0, {MAX_LOGPROBS}], got {k}"),
                ))
            }
        };
        let d = limits.defaults;
        let (guided_field, guided) = match super::guided::from_fields(self)? {
            Some((field, spec)) => (field, Some(spec)),
            None => ("response_format", None),
        };
        let params = SamplingParams {
            temperature: self.temperature.or(d.temperature).unwrap_or(1.0),
            top_k: top_k.or(if self.top_k.is_some() { None } else { d.top_k }),
            top_p: self.top_p.or(d.top_p).unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self
                .repetition_penalty
                .or(d.repetition_penalty)
                .unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed.map(|s| s as u64),
            logprobs,
            guided,
        };
        params
            .validate()
            .map_err(|e| ApiError::invalid(e.param(), e.to_string()))?;
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        tandem_engine::stop::validate(&stop)
            .map_err(|e| ApiError::invalid(e.param(), e.to_string()))?;
        let stop_token_ids = self.stop_token_ids.clone().unwrap_or_default();
        if let Some(&bad) = stop_token_ids
            .iter()
            .find(|&&t| t as usize >= limits.vocab_size)
        {
            return Err(ApiError::invalid(
                "stop_token_ids",
                format!(
                    "stop_token_ids contains {bad}, outside the vocabulary of {} tokens",
                    limits.vocab_size
                ),
            ));
        }
        Ok(Validated {
            n: n as usize,
            params,
            guided_field,
            max_tokens: self.max_tokens.map(|m| m as usize),
            max_tokens_param: mt_param,
            default_max_tokens,
            min_tokens: min_tokens as usize,
            stop,
            stop_token_ids,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            include_stop_str_in_output: self.include_stop_str_in_output.unwrap_or(false),
            skip_special_tokens: self.skip_special_tokens.unwrap_or(true),
            max_model_len: limits.max_model_len,
            vocab_size: limits.vocab_size,
        })
    }
}

impl Validated {
    /// The `n` engine requests for one prompt. Checks the prompt (non-empty,
    /// ids in the vocabulary) and that prompt plus output fit the context.
    /// `prompt_param` names the field the prompt came from.
    pub fn requests(
        &self,
        prompt: Vec<u32>,
        prompt_param: &str,
    ) -> Result<Vec<ServingRequest>, ApiError> {
        must(!prompt.is_empty(), prompt_param, || {
            format!("{prompt_param} is empty: at least one token is needed")
        })?;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= self.vocab_size) {
            return Err(ApiError::invalid(
                prompt_param,
                format!(
                    "{prompt_param} contains token id {bad}, outside the vocabulary of {} tokens",
                    self.vocab_size
                ),
            ));
        }
        let len = prompt.len();
        let max_tokens = match (self.max_tokens, self.default_max_tokens) {
            (Some(m), _) => m,
            (None, DefaultMaxTokens::Fixed(m)) => m,
            (None, DefaultMaxTokens::Remaining) => self.max_model_len.saturating_sub(len),
        };
        if len >= self.max_model_len {
            return Err(ApiError::context_length(
                prompt_param,
                self.max_model_len,
                len,
                max_tokens.max(1),
            ));
        }
        if len + max_tokens > self.max_model_len {
            return Err(ApiError::context_length(
                self.max_tokens_param,
                self.max_model_len,
                len,
                max_tokens,
            ));
        }
        must(self.min_tokens <= max_tokens, "min_tokens", || {
            format!(
                "min_tokens ({}) must not exceed {} ({max_tokens})",
                self.min_tokens, self.max_tokens_param
            )
        })?;
        Ok((0..self.n)
            .map(|i| {
                let mut params = self.params.clone();
                // Each choice draws its own tokens, reproducibly (vLLM: seed + index).
                params.seed = params.seed.map(|s| s.wrapping_add(i as u64));
                ServingRequest {
                    request: Request {
                        prompt_tokens: prompt.clone(),
                        params,
                        stop: StopConditions {
                            max_tokens,
                            min_tokens: self.min_tokens,
                            ignore_eos: self.ignore_eos,
                            stop_token_ids: self.stop_token_ids.clone(),
                        },
                        handoff: Default::default(),
                    },
                    stop_strings: self.stop.clone(),
                    include_stop_str_in_output: self.include_stop_str_in_output,
                    skip_special_tokens: self.skip_special_tokens,
                }
            })
            .collect())
    }
}

#[cfg(test)]
#[path = "validation_tests.rs"]
mod tests;
