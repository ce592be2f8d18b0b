//! Incremental detokenization: turn one request's output tokens into the text
//! deltas a streaming client sees.
//!
//! Decoding each new token on its own is wrong in two ways. Decoders look at
//! neighbours (Llama-2's `Strip` drops the first token's leading space, so
//! "▁world" alone is "world", after "▁Hello" it is " world"), and one
//! character can span tokens (byte-level BPE splits UTF-8 bytes across merges;
//! byte-fallback vocabularies spell rare characters as `<0xE4><0xB8><0xAD>`).
//! Decoding the whole output every step is right but O(length) per token.
//!
//! So we decode a short window: a few already-emitted *context* tokens plus
//! the *pending* tokens not yet emitted. The delta is the window's text minus
//! the context's text. While the window's text ends in U+FFFD a character may
//! still be incomplete, and we hold the pending tokens back.
//!
//! `tokenizers` has `DecodeStream` for the same job, but it borrows the
//! tokenizer (awkward in per-request state), cannot be seeded with prompt
//! context, errors when a decoder rewrites the context, and never bounds its
//! window. This type does all four.

use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;

/// Prompt tokens decoded as context for the first output token (vLLM uses 5
/// too): decoders look behind one token ("▁" spaces, "##" continuations).
const PROMPT_CONTEXT: usize = 5;

/// Pending tokens after which a tail still ending in U+FFFD is taken to be
/// invalid bytes, not an unfinished character, and emitted as decoded. A
/// character is at most 4 bytes and every token at least 1, so real text
/// completes within a few tokens; the cap keeps a model that babbles invalid
/// bytes from growing the window (and the per-token cost) without bound.
pub const MAX_HELD_TOKENS: usize = 16;

const REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// Per-request streaming detokenizer; see the module docs.
///
/// Invariant: `window[..read]` is context whose text was already emitted (or
/// is prompt), `window[read..]` is pending. `context_text` caches the decode
/// of `window[..read]`; `None` until the first push checks the prompt context.
#[derive(Clone, Debug)]
pub struct IncrementalDetokenizer {
    skip_special_tokens: bool,
    window: Vec<u32>,
    read: usize,
    context_text: Option<String>,
    text: String,
}

impl IncrementalDetokenizer {
    /// `prompt_ids` gives the first output token its left context; only the
    /// last few are kept.
    pub fn new(prompt_ids: &[u32], skip_special_tokens: bool) -> Self {
        let tail = &prompt_ids[prompt_ids.len().saturating_sub(PROMPT_CONTEXT)..];
        Self {
            skip_special_tokens,
            window: tail.to_vec(),
            read: tail.len(),
            context_text: None,
            text: String::new(),
        }
    }

    /// All output text emitted so far (the concatenation of every delta).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether tokens are held back waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        self.read < self.window.len()
    }

    /// Tokens the next push decodes, less one: the per-token cost. Stays at
    /// a few tokens for text, at most `2 * (MAX_HELD_TOKENS + 1)` for garbage.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Adds one output token; returns the text that became final (often
    /// empty while a multi-byte character is incomplete).
    pub fn push(&mut self, tok: &Tokenizer, token: u32) -> Result<String> {
        if !self.contributes(tok, token) {
            return Ok(String::new());
        }
        self.vet_prompt_context(tok)?;
        self.window.push(token);
        let full = decode(tok, &self.window, self.skip_special_tokens)?;
        let held = self.window.len() - self.read;
        if full.ends_with(REPLACEMENT) && held <= MAX_HELD_TOKENS {
            return Ok(String::new());
        }
        self.emit(tok, full)
    }

    /// Emits whatever is held back, as the decoder renders it (an unfinished
    /// character becomes U+FFFD). Call once generation has ended.
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        if !self.has_pending() {
            return Ok(String::new());
        }
        self.vet_prompt_context(tok)?;
        let full = decode(tok, &self.window, self.skip_special_tokens)?;
        self.emit(tok, full)
    }

    /// `decode` drops skipped special tokens and unknown ids before its
    /// decoder runs, so leaving them out of the window changes nothing and
    /// keeps a run of them from widening it.
    fn contributes(&self, tok: &Tokenizer, token: u32) -> bool {
        match tok.inner().id_to_token(token) {
            None => false,
            Some(t) => {
                !self.skip_special_tokens
                    || !tok.inner().get_added_vocabulary().is_special_token(&t)
            }
        }
    }

    /// Decodes the prompt context once, on first use. A prompt tail ending
    /// mid-character (token-id prompts can) would swallow the first output
    /// bytes, so then the output starts without context instead.
    fn vet_prompt_context(&mut self, tok: &Tokenizer) -> Result<()> {
        if self.context_text.is_some() {
            return Ok(());
        }
        let mut text = decode(tok, &self.window[..self.read], self.skip_special_tokens)?;
        if text.ends_with(REPLACEMENT) {
            self.window.clear();
            self.read = 0;
            text.clear();
        }
        self.context_text = Some(text);
        Ok(())
    }

    /// Emits the pending tokens given `full`, the window's text; the pending
    /// tokens become the next context.
    fn emit(&mut self, tok: &Tokenizer, full: String) -> Result<String> {
        let context = self.context_text.as_deref().unwrap_or("");
        let pending = decode(tok, &self.window[self.read..], self.skip_special_tokens)?;
        // If the decoder re-rendered the context (byte-fallback turns a whole
        // byte run into U+FFFDs once one byte is invalid), emit the pending
        // tokens decoded alone rather than guess an offset.
        let delta = full.strip_prefix(context).unwrap_or(&pending).to_string();
        self.window.drain(..self.read);
        self.read = self.window.len();
        self.context_text = Some(pending);
        self.text.push_str(&delta);
        Ok(delta)
    }
}

fn decode(tok: &Tokenizer, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
    if ids.is_empty() {
        return Ok(String::new());
    }
    tok.inner()
        .decode(ids, skip_special_tokens)
        .map_err(|e| EngineError::Tokenizer(format!("incremental decoding failed: {e}")))
}
