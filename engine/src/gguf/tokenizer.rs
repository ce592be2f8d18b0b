//! A `tokenizers` tokenizer from `tokenizer.ggml.*` metadata: GPT-2 style
//! byte-level BPE (`model = gpt2`) with the pre-tokenizer that llama.cpp's
//! `pre` name stands for, or SentencePiece BPE (`model = llama`, see
//! `sentencepiece.rs`); special tokens from `token_type`, BOS/EOS and whether
//! to add them, and the chat template.

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::sequence::Sequence as ProcessorSequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::{as_i64, GgufFile};
use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;

/// llama.cpp's `token_type` values that mark special tokens.
pub(super) const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The split regex llama.cpp (llama-vocab.cpp) uses for Llama 3 and Qwen 2;
/// they differ only in how many digits a number piece takes.
fn llama3_style_regex(digits: &str) -> String {
    format!(
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{digits}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
}

const SUPPORTED_PRE: &str = "gpt2, default, smollm, starcoder, refact, llama-bpe, llama3, qwen2";

pub(super) fn tok_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Tokenizer(format!("building the tokenizer from GGUF metadata: {e}"))
}

impl GgufFile {
    fn pre_tokenizer(&self, pre: &str) -> Result<PreTokenizerWrapper> {
        // Byte-level with GPT-2's own regex, as transformers' tokenizer.json has it.
        let byte_level_gpt2 = ByteLevel::new(false, true, true);
        let split_then_bytes = |regex: String| -> Result<PreTokenizerWrapper> {
            let split = Split::new(
                SplitPattern::Regex(regex),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tok_err)?;
            Ok(Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into())
        };
        match pre {
            "gpt2" | "default" => Ok(byte_level_gpt2.into()),
            "smollm" | "starcoder" | "refact" => {
                Ok(Sequence::new(vec![Digits::new(true).into(), byte_level_gpt2.into()]).into())
            }
            "llama-bpe" | "llama3" => split_then_bytes(llama3_style_regex("{1,3}")),
            "qwen2" => split_then_bytes(llama3_style_regex("")),
            other => Err(self.unsupported(format!(
                "tokenizer pre-tokenizer {other:?} (tokenizer.ggml.pre); supported: {SUPPORTED_PRE}"
            ))),
        }
    }

    /// GPT-2 style byte-level BPE with the pre-tokenizer `pre` names.
    fn byte_level_bpe(&self, tokens: &[String]) -> Result<tokenizers::Tokenizer> {
        let merges = self.strings("tokenizer.ggml.merges")?;
        let pre = self
            .string("tokenizer.ggml.pre")
            .unwrap_or_else(|_| "default".into());
        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            vocab.insert(token.clone(), id as u32);
        }
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| tok_err(format!("merge {m:?} is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(self.pre_tokenizer(&pre)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        Ok(inner)
    }

    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.array(key)
            .ok_or_else(|| self.missing(key))?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(self.missing(key)),
            })
            .collect()
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let model = self.string("tokenizer.ggml.model")?;
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = self
            .array("tokenizer.ggml.token_type")
            .map(|a| a.iter().map(|v| as_i64(v).unwrap_or(1)).collect())
            .unwrap_or_default();
        // What each family does by default when the file does not say.
        let (mut inner, mut processors, default_add_bos) = match model.as_str() {
            "gpt2" => {
                let processor: PostProcessorWrapper =
                    tokenizers::processors::byte_level::ByteLevel::new(false, false, true).into();
                (self.byte_level_bpe(&tokens)?, vec![processor], false)
            }
            "llama" => (self.sentencepiece_bpe(&tokens, &types)?, Vec::new(), true),
            other => {
                return Err(self.unsupported(format!(
                    "tokenizer model {other:?} (tokenizer.ggml.model); supported: \
                     gpt2 (byte-level BPE), llama (SentencePiece BPE)"
                )))
            }
        };

        let special = |kind: i64| {
            tokens
                .iter()
                .zip(&types)
                .filter(move |(_, t)| **t == kind)
                .map(|(s, _)| s.clone())
        };
        let control: Vec<AddedToken> = special(TOKEN_TYPE_CONTROL)
            .map(|s| AddedToken::from(s, true))
            .collect();
        let user: Vec<AddedToken> = special(TOKEN_TYPE_USER_DEFINED)
            .map(|s| AddedToken::from(s, false))
            .collect();
        inner.add_special_tokens(control).map_err(tok_err)?;
        inner.add_tokens(user).map_err(tok_err)?;

        let token_of = |key: &str| {
            self.opt_uint(key)
                .and_then(|id| tokens.get(id as usize))
                .cloned()
        };
        let bos = token_of("tokenizer.ggml.bos_token_id");
        let eos = token_of("tokenizer.ggml.eos_token_id");
        let add_bos = self
            .opt_bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(default_add_bos);
        let add_eos = self
            .opt_bool("tokenizer.ggml.add_eos_token")
            .unwrap_or(false);
        let template_tokens: Vec<&String> = [
            bos.as_ref().filter(|_| add_bos),
            eos.as_ref().filter(|_| add_eos),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !template_tokens.is_empty() {
            let wrap = |seq: &str| {
                let mut parts = Vec::new();
                if let (true, Some(b)) = (add_bos, &bos) {
                    parts.push(b.clone());
                }
                parts.push(seq.to_string());
                if let (true, Some(e)) = (add_eos, &eos) {
                    parts.push(e.clone());
                }
                parts.join(" ")
            };
            let specials: Vec<(String, u32)> = template_tokens
                .iter()
                .filter_map(|t| inner.token_to_id(t).map(|id| ((*t).clone(), id)))
                .collect();
            let template = TemplateProcessing::builder()
                .try_single(wrap("$A"))
                .map_err(tok_err)?
                .try_pair(format!("{} {}", wrap("$A"), wrap("$B:1")))
                .map_err(tok_err)?
                .special_tokens(specials)
                .build()
                .map_err(tok_err)?;
            processors.push(template.into());
        }
        if !processors.is_empty() {
            inner.with_post_processor(Some(ProcessorSequence::new(processors)));
        }

        let chat_template = self.string("tokenizer.chat_template").ok();
        Ok(Tokenizer::from_parts(inner, bos, eos, chat_template))
    }
}
