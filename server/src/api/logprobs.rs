//! Logprobs in the two shapes the OpenAI API uses: the legacy completions
//! format (parallel lists plus a dict of top tokens per position) and the
//! chat format (one object per token, with UTF-8 bytes).
//!
//! Tokens are shown as each id decodes on its own, special tokens included.
//! Non-finite logprobs (a logit of -inf) are reported as -9999, as vLLM does,
//! because JSON has no infinity.

use serde::ser::{Serialize, SerializeMap, Serializer};
use tandem_engine::sampler::SampledToken;
use tandem_engine::tokenizer::Tokenizer;

fn finite(lp: f32) -> f32 {
    if lp.is_finite() {
        lp
    } else {
        -9999.0
    }
}

fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

/// `{token: logprob, ...}`, in rank order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopMap(pub Vec<(String, f32)>);

impl Serialize for TopMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The completions format.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct CompletionLogprobs {
    pub text_offset: Vec<usize>,
    pub token_logprobs: Vec<Option<f32>>,
    pub tokens: Vec<String>,
    pub top_logprobs: Vec<Option<TopMap>>,
}

impl CompletionLogprobs {
    /// Appends `samples`; `offset` is the character offset in the choice's
    /// text where the next token starts, advanced past each token.
    pub fn push(&mut self, tok: &Tokenizer, samples: &[SampledToken], offset: &mut usize) {
        for s in samples {
            let text = token_text(tok, s.token);
            let mut top: Vec<(String, f32)> = Vec::with_capacity(s.top_logprobs.len() + 1);
            for &(id, lp) in &s.top_logprobs {
                let t = token_text(tok, id);
                if !top.iter().any(|(k, _)| *k == t) {
                    top.push((t, finite(lp)));
                }
            }
            // The sampled token is always among the top entries (vLLM).
            if !s.top_logprobs.iter().any(|&(id, _)| id == s.token)
                && !top.iter().any(|(k, _)| *k == text)
            {
                top.push((text.clone(), finite(s.logprob)));
            }
            self.text_offset.push(*offset);
            *offset += text.chars().count();
            self.token_logprobs.push(Some(finite(s.logprob)));
            self.top_logprobs.push(Some(TopMap(top)));
            self.tokens.push(text);
        }
    }
}

/// The chat format: `{"content": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatLogprob>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ChatLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

impl ChatLogprobs {
    pub fn push(&mut self, tok: &Tokenizer, samples: &[SampledToken]) {
        for s in samples {
            let token = token_text(tok, s.token);
            let top_logprobs = s
                .top_logprobs
                .iter()
                .map(|&(id, lp)| {
                    let token = token_text(tok, id);
                    TopLogprob {
                        bytes: token.as_bytes().to_vec(),
                        token,
                        logprob: finite(lp),
                    }
                })
                .collect();
            self.content.push(ChatLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: finite(s.logprob),
                top_logprobs,
            });
        }
    }
}
