//! Guided decoding (structured outputs): a request's constraint — a JSON
//! schema, a regex, a list of choices or a Lark grammar — becomes a mask of
//! the tokens allowed at each step, applied to the logits before the
//! sampler's temperature, top-k and top-p. The grammar engine is
//! `llguidance` (the one vLLM, SGLang and llama.cpp use); tandem only feeds
//! it the vocabulary and the sampled tokens.
//!
//! Data flows one way: the constraint ([`GuidedDecoding`]) is plain data in
//! the request's [`SamplingParams`](crate::sampler::SamplingParams), so it
//! travels to a decode worker with the rest of the request; each engine
//! turns it into a [`Guide`] through its [`GuidanceCompiler`] (which caches
//! compiled grammars, so a decode worker's copy is a clone, not a compile)
//! and replays the tokens the prefill worker already sampled.

mod compiler;
mod guide;

pub use compiler::GuidanceCompiler;
pub use guide::Guide;

use llguidance::api::TopLevelGrammar;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most choices a `guided_choice` list may hold.
pub const MAX_CHOICES: usize = 1024;

/// What the output must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum GuidedDecoding {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON valid against this schema (`response_format: {"type":
    /// "json_schema"}`, vLLM's `guided_json`).
    JsonSchema(serde_json::Value),
    /// The whole output matches this regex (vLLM's `guided_regex`).
    Regex(String),
    /// Exactly one of these strings (vLLM's `guided_choice`).
    Choice(Vec<String>),
    /// A Lark grammar, llguidance's dialect (vLLM's `guided_grammar`).
    Lark(String),
}

/// A constraint that cannot be compiled, or an engine that cannot apply one.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum GuidedError {
    #[error("{param} is invalid: {message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    #[error("guided decoding is unavailable for this model's tokenizer: {0}")]
    Unavailable(String),
}

impl GuidedError {
    /// The request field to blame in an OpenAI error object.
    pub fn param(&self) -> &'static str {
        match self {
            GuidedError::Invalid { param, .. } => param,
            GuidedError::Unavailable(_) => "response_format",
        }
    }
}

/// JSON laid out one way: `, ` and `: ` as separators (Python's
/// `json.dumps`, what models see most) and no other whitespace. Free
/// whitespace lets a model pad forever (a random-weight model always
/// does); users who want it set `x-guidance` in their schema.
pub fn json_layout() -> serde_json::Value {
    serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

impl GuidedDecoding {
    /// The request field this constraint came from, for errors.
    pub fn param(&self) -> &'static str {
        match self {
            GuidedDecoding::JsonObject | GuidedDecoding::JsonSchema(_) => "response_format",
            GuidedDecoding::Regex(_) => "guided_regex",
            GuidedDecoding::Choice(_) => "guided_choice",
            GuidedDecoding::Lark(_) => "guided_grammar",
        }
    }

    /// The llguidance grammar, after the checks llguidance leaves to us.
    pub(crate) fn to_grammar(&self) -> Result<TopLevelGrammar, GuidedError> {
        let invalid = |message: String| GuidedError::Invalid {
            param: self.param(),
            message,
        };
        Ok(match self {
            GuidedDecoding::JsonObject => TopLevelGrammar::from_json_schema(serde_json::json!({
                "type": "object",
                "x-guidance": json_layout(),
            })),
            GuidedDecoding::JsonSchema(schema) => {
                let mut schema = schema.clone();
                match &mut schema {
                    serde_json::Value::Object(map) => {
                        map.entry("x-guidance").or_insert_with(json_layout);
                    }
                    serde_json::Value::Bool(_) => {}
                    other => {
                        return Err(invalid(format!(
                            "a JSON schema must be an object or a boolean, got {other}"
                        )))
                    }
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            GuidedDecoding::Regex(rx) => TopLevelGrammar::from_regex(rx),
            GuidedDecoding::Choice(choices) => {
                if choices.is_empty() || choices.len() > MAX_CHOICES {
                    return Err(invalid(format!(
                        "guided_choice must list 1 to {MAX_CHOICES} strings, got {}",
                        choices.len()
                    )));
                }
                if let Some(i) = choices.iter().position(|c| c.is_empty()) {
                    return Err(invalid(format!("guided_choice[{i}] is empty")));
                }
                let alternatives: Vec<String> = choices
                    .iter()
                    .map(|c| serde_json::Value::String(c.clone()).to_string())
                    .collect();
                TopLevelGrammar::from_lark(format!("start: {}\n", alternatives.join(" | ")))
            }
            GuidedDecoding::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        })
    }
}

#[cfg(test)]
mod tests;
