//! Per-request sampling parameters and their validation.
//!
//! Validation messages go verbatim to API users as 400 errors, so each one names
//! the field, its allowed range and the value received.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::guided::GuidedDecoding;

/// Most top logprobs one request may ask for (OpenAI's limit).
pub const MAX_LOGPROBS: usize = 20;

/// Temperatures below this sample greedily (argmax, no RNG draw).
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// How one request turns logits into tokens. Missing fields take their defaults
/// when deserialised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 (below [`GREEDY_TEMPERATURE`]) means greedy; default 1.0.
    pub temperature: f32,
    /// Keep the k most likely tokens; `None` or `Some(0)` keeps all.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose mass reaches `top_p`; in (0, 1].
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; in [0, 1].
    pub min_p: f32,
    /// Over prompt and output tokens: positive logits are divided by it, others multiplied; > 0.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already in the output; in [-2, 2].
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the output; in [-2, 2].
    pub frequency_penalty: f32,
    /// Seeds the request's own RNG; `None` takes a seed from the engine.
    pub seed: Option<u64>,
    /// Number of top logprobs to return with each token, at most [`MAX_LOGPROBS`].
    pub logprobs: Option<usize>,
    /// Structured output: what the text must match (see [`crate::guided`]).
    pub guided: Option<GuidedDecoding>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logprobs: None,
            guided: None,
        }
    }
}

/// A sampling parameter out of its allowed range.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum SamplingError {
    #[error("temperature must be in [0, inf), got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("min_p must be in [0, 1], got {0}")]
    MinP(f32),
    #[error("repetition_penalty must be in (0, inf), got {0}")]
    RepetitionPenalty(f32),
    #[error("presence_penalty must be in [-2, 2], got {0}")]
    PresencePenalty(f32),
    #[error("frequency_penalty must be in [-2, 2], got {0}")]
    FrequencyPenalty(f32),
    #[error("logprobs must be in [0, {MAX_LOGPROBS}], got {0}")]
    Logprobs(usize),
}

impl SamplingError {
    /// The offending request field, for the `param` of an OpenAI error object.
    pub fn param(&self) -> &'static str {
        match self {
            Self::Temperature(_) => "temperature",
            Self::TopP(_) => "top_p",
            Self::MinP(_) => "min_p",
            Self::RepetitionPenalty(_) => "repetition_penalty",
            Self::PresencePenalty(_) => "presence_penalty",
            Self::FrequencyPenalty(_) => "frequency_penalty",
            Self::Logprobs(_) => "logprobs",
        }
    }
}

impl SamplingParams {
    /// Deterministic argmax decoding; penalties stay at their neutral values.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// True when the request samples by argmax and draws nothing from its RNG.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE
    }

    /// `top_k` as a count below `vocab`, or `None` when it keeps every token.
    pub fn effective_top_k(&self, vocab: usize) -> Option<usize> {
        self.top_k.filter(|&k| k > 0 && k < vocab)
    }

    /// Checks every field against its range. The comparisons are written so
    /// that NaN fails them too.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !(t >= 0.0 && t.is_finite()) {
            return Err(SamplingError::Temperature(t));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplingError::MinP(self.min_p));
        }
        let r = self.repetition_penalty;
        if !(r > 0.0 && r.is_finite()) {
            return Err(SamplingError::RepetitionPenalty(r));
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return Err(SamplingError::PresencePenalty(self.presence_penalty));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return Err(SamplingError::FrequencyPenalty(self.frequency_penalty));
        }
        match self.logprobs {
            Some(n) if n > MAX_LOGPROBS => Err(SamplingError::Logprobs(n)),
            _ => Ok(()),
        }
    }

    /// True when any penalty would change the logits.
    pub(crate) fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_neutral() {
        let p = SamplingParams::default();
        assert_eq!(p.validate(), Ok(()));
        assert!(!p.is_greedy());
        assert!(!p.has_penalties());
        assert!(SamplingParams::greedy().is_greedy());
        assert_eq!(SamplingParams::greedy().validate(), Ok(()));
    }

    #[test]
    fn messages_name_field_range_and_value() {
        let cases: Vec<(SamplingParams, &str, &str)> = vec![
            (
                SamplingParams {
                    temperature: -0.5,
                    ..Default::default()
                },
                "temperature",
                "temperature must be in [0, inf), got -0.5",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
                "temperature must be in [0, inf), got NaN",
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
                "top_p must be in (0, 1], got 1.5",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
                "top_p must be in (0, 1], got 0",
            ),
            (
                SamplingParams {
                    min_p: 1.1,
                    ..Default::default()
                },
                "min_p",
                "min_p must be in [0, 1], got 1.1",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "repetition_penalty",
                "repetition_penalty must be in (0, inf), got 0",
            ),
            (
                SamplingParams {
                    presence_penalty: 2.5,
                    ..Default::default()
                },
                "presence_penalty",
                "presence_penalty must be in [-2, 2], got 2.5",
            ),
            (
                SamplingParams {
                    frequency_penalty: -3.0,
                    ..Default::default()
                },
                "frequency_penalty",
                "frequency_penalty must be in [-2, 2], got -3",
            ),
            (
                SamplingParams {
                    logprobs: Some(21),
                    ..Default::default()
                },
                "logprobs",
                "logprobs must be in [0, 20], got 21",
            ),
        ];
        for (params, field, message) in cases {
            let err = params.validate().unwrap_err();
            assert_eq!(err.param(), field);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn range_edges_are_accepted() {
        let p = SamplingParams {
            temperature: 0.0,
            top_k: Some(0),
            top_p: 1.0,
            min_p: 1.0,
            repetition_penalty: 0.01,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            seed: Some(u64::MAX),
            logprobs: Some(MAX_LOGPROBS),
            guided: None,
        };
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn missing_fields_deserialise_to_defaults() {
        let p: SamplingParams = serde_json::from_str(r#"{"top_p": 0.9, "seed": 7}"#).unwrap();
        let want = SamplingParams {
            top_p: 0.9,
            seed: Some(7),
            ..Default::default()
        };
        assert_eq!(p, want);
    }

    #[test]
    fn top_k_zero_or_vocab_disables_it() {
        let k = |top_k| {
            SamplingParams {
                top_k,
                ..Default::default()
            }
            .effective_top_k(10)
        };
        assert_eq!(k(None), None);
        assert_eq!(k(Some(0)), None);
        assert_eq!(k(Some(10)), None);
        assert_eq!(k(Some(3)), Some(3));
    }
}
