//! Byte-level BPE tokenizer trained at run time on the bundled corpus.
//!
//! Training here instead of shipping a `tokenizer.json` keeps the repository
//! free of generated blobs and exercises the same `tokenizers` code paths a
//! real GPT-2/Llama-3 style tokenizer uses.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::DemoError;

/// Original English prose (plus some other scripts and emoji) written for
/// tandem, so the tokenizer has real words and multi-byte merges to learn.
pub const CORPUS: &str = include_str!("../../assets/demo_corpus.txt");

pub const BOS: &str = "<|begin_of_text|>";
pub const EOT: &str = "<|end_of_text|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// Special tokens in id order; they take the last ids of the vocabulary, as in
/// Llama 3, so the learned tokens start at 0.
pub const SPECIAL_TOKENS: [&str; 4] = [BOS, EOT, IM_START, IM_END];

/// Ids of the special tokens in a trained demo tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: u32,
    pub end_of_text: u32,
    pub im_start: u32,
    pub im_end: u32,
}

/// A trained tokenizer and where its special tokens landed.
pub struct TrainedTokenizer {
    pub tokenizer: Tokenizer,
    pub special: SpecialIds,
}

impl TrainedTokenizer {
    /// `tokenizer.json` text (pretty, as `save_pretrained` writes it).
    pub fn to_json(&self) -> Result<String, DemoError> {
        self.tokenizer
            .to_string(true)
            .map_err(|e| DemoError::Tokenizer(format!("serialising tokenizer.json: {e}")))
    }
}

/// Train a byte-level BPE with exactly `vocab_size` ids (learned + special).
///
/// Deterministic: the trainer breaks count ties by pair id, and ids are
/// assigned in merge order, so the same corpus gives the same file.
pub fn train(vocab_size: usize) -> Result<TrainedTokenizer, DemoError> {
    let err = |what: &str, e: tokenizers::Error| DemoError::Tokenizer(format!("{what}: {e}"));
    let learned = vocab_size - SPECIAL_TOKENS.len();

    let mut tokenizer = Tokenizer::new(BPE::default());
    // No prefix space (Llama 3 / GPT-2 behaviour): "Hi" and " Hi" differ.
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let bpe = BpeTrainer::builder()
        .vocab_size(learned)
        .min_frequency(0)
        .show_progress(false)
        // All 256 byte symbols, seen in the corpus or not, so any text encodes.
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(bpe);
    // One sequence: newlines and indentation runs become mergeable tokens too.
    tokenizer
        .train(&mut trainer, std::iter::once(CORPUS))
        .map_err(|e| err("training BPE on the demo corpus", e))?;

    let got = tokenizer.get_vocab_size(false);
    if got != learned {
        return Err(DemoError::Tokenizer(format!(
            "the demo corpus yields {got} BPE tokens, {learned} are needed; \
             the corpus in engine/assets/demo_corpus.txt is too small for this vocabulary"
        )));
    }

    tokenizer
        .add_special_tokens(SPECIAL_TOKENS.map(|t| AddedToken::from(t, true)))
        .map_err(|e| err("adding special tokens", e))?;
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| DemoError::Tokenizer(format!("special token {t} has no id")))
    };
    let special = SpecialIds {
        bos: id(BOS)?,
        end_of_text: id(EOT)?,
        im_start: id(IM_START)?,
        im_end: id(IM_END)?,
    };

    // Like Llama 3: encoding with special tokens prepends BOS.
    let template = TemplateProcessing::builder()
        .try_single(format!("{BOS} $A"))
        .and_then(|b| b.try_pair(format!("{BOS} $A {BOS}:1 $B:1")))
        .map_err(|e| DemoError::Tokenizer(format!("BOS template: {e}")))?
        .special_tokens(vec![(BOS, special.bos)])
        .build()
        .map_err(|e| DemoError::Tokenizer(format!("BOS template: {e}")))?;
    tokenizer.with_post_processor(Some(template));

    Ok(TrainedTokenizer { tokenizer, special })
}
