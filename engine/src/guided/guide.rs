//! One sequence's grammar state: the mask for its next token, and the
//! tokens it has produced so far fed back in.

use llguidance::toktrie::{SimpleVob, TokenId};
use llguidance::{Matcher, TokenParser};

/// A compiled constraint following one sequence. The engine computes the
/// next mask while the model runs ([`Guide::prepare`]), the sampler applies
/// it ([`Guide::apply`]), and every sampled token is fed back
/// ([`Guide::consume`]).
pub struct Guide {
    matcher: Matcher,
    /// The mask for the next token, once computed.
    mask: Option<SimpleVob>,
    vocab_size: usize,
    /// Why the grammar stopped early, when it failed (logged once).
    failure: Option<String>,
}

impl std::fmt::Debug for Guide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guide")
            .field("mask_ready", &self.mask.is_some())
            .field("finished", &self.is_finished())
            .field("failure", &self.failure)
            .finish()
    }
}

impl Guide {
    pub(crate) fn new(parser: TokenParser, vocab_size: usize) -> Self {
        Guide {
            matcher: Matcher::new(Ok(parser)),
            mask: None,
            vocab_size,
            failure: None,
        }
    }

    /// Computes the mask for the next token unless it is ready. Once the
    /// grammar is complete only EOS is allowed.
    pub fn prepare(&mut self) {
        if self.mask.is_some() {
            return;
        }
        let mask = match self.matcher.compute_mask_or_eos() {
            Ok(m) => m,
            Err(e) => {
                self.fail(format!("mask computation failed: {e}"));
                self.eos_only()
            }
        };
        self.mask = Some(mask);
    }

    /// Sets every token the grammar forbids to -inf in one row of logits.
    pub fn apply(&mut self, logits: &mut [f32]) {
        self.prepare();
        let mask = self.mask.as_ref().expect("prepared above");
        let allowed = mask.len().min(logits.len());
        for (id, l) in logits[..allowed].iter_mut().enumerate() {
            if !mask.is_allowed(id as TokenId) {
                *l = f32::NEG_INFINITY;
            }
        }
        // Ids beyond the grammar's vocabulary are never allowed.
        for l in &mut logits[allowed..] {
            *l = f32::NEG_INFINITY;
        }
    }

    /// Feeds back a token the sequence produced (sampled here, or on the
    /// prefill worker this request came from).
    pub fn consume(&mut self, token: u32) {
        self.mask = None;
        if self.matcher.is_stopped() {
            return;
        }
        if let Err(e) = self.matcher.consume_token(token) {
            self.fail(format!("token {token} rejected: {e}"));
        }
    }

    /// True once the grammar is complete (or failed): the output ends here.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Why the grammar stopped without completing, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            tracing::warn!(reason = %why, "guided decoding stopped the sequence");
            self.failure = Some(why);
        }
    }

    fn eos_only(&self) -> SimpleVob {
        match self.matcher.tok_env() {
            Ok(env) => env.tok_trie().eos_token_set(),
            // No tokenizer left (matcher in error): allow nothing but the
            // first id past the vocabulary, i.e. nothing; the sampler
            // falls back to the raw argmax and the sequence ends now.
            Err(_) => SimpleVob::alloc(self.vocab_size),
        }
    }
}
