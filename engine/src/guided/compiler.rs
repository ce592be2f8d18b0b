//! From constraints to compiled grammars, per model vocabulary.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{ParserFactory, TokenParser};
use parking_lot::Mutex;

use super::{Guide, GuidedDecoding, GuidedError};
use crate::tokenizer::Tokenizer;

/// Compiled grammars kept for reuse (a decode worker, `n > 1`, and clients
/// that send one schema again and again clone instead of compiling).
const CACHE_ENTRIES: usize = 256;

/// Compiles constraints against one model's vocabulary. Cheap to create:
/// the token trie (≈0.1–0.3 s for a 150k vocabulary) is built on first use,
/// so a server that never sees a constraint never pays for it. Shared by
/// the API (validation, on blocking threads) and the engine.
pub struct GuidanceCompiler {
    pub(super) tokenizer: Arc<Tokenizer>,
    /// The model's logit width; may exceed the tokenizer's vocabulary.
    vocab_size: usize,
    pub(super) eos: TokenId,
    factory: OnceLock<Result<ParserFactory, String>>,
    cache: Mutex<ParserCache>,
}

impl std::fmt::Debug for GuidanceCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuidanceCompiler")
            .field("vocab_size", &self.vocab_size)
            .field("eos", &self.eos)
            .field("cached_grammars", &self.cache.lock().order.len())
            .finish()
    }
}

#[derive(Default)]
struct ParserCache {
    parsers: HashMap<String, TokenParser>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<String>,
}

impl GuidanceCompiler {
    /// `eos_token_ids[0]` ends a finished grammar's output.
    pub fn new(tokenizer: Arc<Tokenizer>, vocab_size: usize, eos_token_ids: &[u32]) -> Self {
        GuidanceCompiler {
            tokenizer,
            vocab_size,
            eos: eos_token_ids.first().copied().unwrap_or(0),
            factory: OnceLock::new(),
            cache: Mutex::new(ParserCache::default()),
        }
    }

    /// The logit width masks are computed for.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// A fresh guide for one sequence; the error names the request field.
    /// The first compile of a constraint builds its grammar (milliseconds
    /// for typical schemas); later ones clone it from the cache.
    pub fn compile(&self, spec: &GuidedDecoding) -> Result<Guide, GuidedError> {
        let key = serde_json::to_string(spec).expect("constraints serialise");
        if let Some(p) = self.cache.lock().parsers.get(&key) {
            return Ok(Guide::new(p.deep_clone(), self.vocab_size));
        }
        let grammar = spec.to_grammar()?;
        let factory = self.factory()?;
        let parser = factory
            .create_parser(grammar)
            .map_err(|e| GuidedError::Invalid {
                param: spec.param(),
                message: e.to_string(),
            })?;
        let guide = Guide::new(parser.deep_clone(), self.vocab_size);
        let mut cache = self.cache.lock();
        if !cache.parsers.contains_key(&key) {
            if cache.order.len() >= CACHE_ENTRIES {
                if let Some(old) = cache.order.pop_front() {
                    cache.parsers.remove(&old);
                }
            }
            cache.order.push_back(key.clone());
            cache.parsers.insert(key, parser);
        }
        Ok(guide)
    }

    fn factory(&self) -> Result<&ParserFactory, GuidedError> {
        self.factory
            .get_or_init(|| build_factory(&self.tokenizer, self.vocab_size, self.eos))
            .as_ref()
            .map_err(|e| GuidedError::Unavailable(e.clone()))
    }
}

/// The vocabulary as llguidance sees it: each id's bytes, specials marked.
struct VocabEnv {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Forced bytes may end inside a character (the lead byte that é
        // and ñ share): valid runs go through the tokenizer, the rest
        // greedily through the trie, never as U+FFFD.
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer.encode(text, false).unwrap_or_default()
        })
    }
}

fn build_factory(
    tokenizer: &Arc<Tokenizer>,
    vocab_size: usize,
    eos: TokenId,
) -> Result<ParserFactory, String> {
    let started = std::time::Instant::now();
    let json = tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| format!("could not serialise the tokenizer: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("tokenizer JSON: {e}"))?;
    let mut words = llguidance::token_bytes_from_tokenizer_json(&json)
        .map_err(|e| format!("could not read token bytes: {e}"))?;
    if words.len() > vocab_size {
        return Err(format!(
            "the tokenizer has {} tokens, more than the model's {vocab_size} logits",
            words.len()
        ));
    }
    // Ids the tokenizer does not define (padding of the embedding) become
    // specials no text grammar can produce.
    words.resize(vocab_size, Vec::new());
    for (id, w) in words.iter_mut().enumerate() {
        if w.is_empty() {
            *w = [
                &[TokTrie::SPECIAL_TOKEN_MARKER][..],
                format!("<[{id}]>").as_bytes(),
            ]
            .concat();
        }
    }
    let info = TokRxInfo::new(vocab_size as u32, eos);
    let env: TokEnv = Arc::new(VocabEnv {
        trie: TokTrie::from(&info, &words),
        tokenizer: tokenizer.clone(),
    });
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
    factory.quiet();
    tracing::info!(
        vocab_size,
        ms = started.elapsed().as_millis() as u64,
        "guided decoding: token trie built"
    );
    Ok(factory)
}
