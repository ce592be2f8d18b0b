//! llama.cpp's `llama` tokenizer model: SentencePiece BPE (Llama 2, Mistral
//! v0.1, TinyLlama), rebuilt the way transformers' GGUF converter and
//! `SentencePieceExtractor` do: merges derived from the vocabulary and its
//! scores, byte fallback, `▁` for spaces with one prepended.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::DecoderWrapper;

use super::tokenizer::tok_err;
use super::GgufFile;
use crate::error::Result;

const SPACE: &str = "\u{2581}";

impl GgufFile {
    pub(super) fn sentencepiece_bpe(
        &self,
        tokens: &[String],
        types: &[i64],
    ) -> Result<tokenizers::Tokenizer> {
        let scores: Vec<f32> = match self.array("tokenizer.ggml.scores") {
            Some(a) => a
                .iter()
                .map(|v| match v {
                    candle_core::quantized::gguf_file::Value::F32(x) => Ok(*x),
                    _ => Err(self.missing("tokenizer.ggml.scores")),
                })
                .collect::<Result<_>>()?,
            None => return Err(self.missing("tokenizer.ggml.scores")),
        };
        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            vocab.insert(token.clone(), id as u32);
        }
        let merges = self.merges_from_scores(tokens, &scores, &vocab)?;
        let mut builder = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .fuse_unk(true)
            .byte_fallback(true);
        const TOKEN_TYPE_UNKNOWN: i64 = 2;
        let unk = self
            .opt_uint("tokenizer.ggml.unknown_token_id")
            .and_then(|id| tokens.get(id as usize))
            .or_else(|| {
                let i = types.iter().position(|t| *t == TOKEN_TYPE_UNKNOWN)?;
                tokens.get(i)
            });
        if let Some(unk) = unk {
            builder = builder.unk_token(unk.clone());
        }
        let mut inner = tokenizers::Tokenizer::new(builder.build().map_err(tok_err)?);
        let mut normalizers = Vec::new();
        if self
            .opt_bool("tokenizer.ggml.add_space_prefix")
            .unwrap_or(true)
        {
            normalizers.push(Prepend::new(SPACE.into()).into());
        }
        normalizers.push(Replace::new(" ", SPACE).map_err(tok_err)?.into());
        inner
            .with_normalizer(Some(NormalizerSequence::new(normalizers)))
            .map_err(tok_err)?;
        let decoders: Vec<DecoderWrapper> = vec![
            Replace::new(SPACE, " ").map_err(tok_err)?.into(),
            ByteFallback::new().into(),
            Fuse::new().into(),
            Strip::new(' ', 1, 0).into(),
        ];
        inner.with_decoder(Some(DecoderSequence::new(decoders)));
        Ok(inner)
    }

    /// Every split of a piece into two pieces of the vocabulary is a merge,
    /// ranked by the merged piece's score (as `SentencePieceExtractor`).
    fn merges_from_scores(
        &self,
        tokens: &[String],
        scores: &[f32],
        vocab: &Vocab,
    ) -> Result<Vec<(String, String)>> {
        if scores.len() != tokens.len() {
            return Err(tok_err(format!(
                "{} scores for {} tokens",
                scores.len(),
                tokens.len()
            )));
        }
        let mut merges: Vec<(u32, u32, f32)> = Vec::new();
        for (piece, &score) in tokens.iter().zip(scores) {
            let mut local: Vec<(u32, u32, f32)> = piece
                .char_indices()
                .skip(1)
                .filter_map(|(i, _)| {
                    let (l, r) = piece.split_at(i);
                    Some((*vocab.get(l)?, *vocab.get(r)?, score))
                })
                .collect();
            local.sort_by_key(|&(l, r, _)| (l, r));
            merges.extend(local);
        }
        // Stable: equal scores keep the order above.
        merges.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(merges
            .into_iter()
            .map(|(l, r, _)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
            .collect())
    }
}
