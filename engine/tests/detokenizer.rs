//! Streaming detokenization: deltas are whole characters, add up to the
//! one-shot decode, and keep the spaces a token's neighbours decide.
//!
//! Tokenizers: the demo's byte-level BPE (GPT-2/Llama-3 style), a fixture
//! byte-level BPE, and a Llama-2 style byte-fallback BPE built here.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use tandem_engine::demo::{write_demo_model, DemoSize};
use tandem_engine::detokenizer::{IncrementalDetokenizer, MAX_HELD_TOKENS};
use tandem_engine::model_dir::ModelFiles;
use tandem_engine::tokenizer::Tokenizer;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::metaspace::{Metaspace, PrependScheme};
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::AddedToken;

const FFFD: char = char::REPLACEMENT_CHARACTER;

const SAMPLES: [&str; 4] = [
    "你好，世界！日本語のテキストと한국어.",
    "Family 👩‍👩‍👧‍👦, flags 🇯🇵🇫🇷, thumbs 👍🏽 and 🙂.",
    "Crème brûlée at the café, naïve Øresund, Ελληνικά, Jürgen.",
    "mixed: ½ € 𝄞 ß ü\n  indented ☕ done",
];

/// Loads a `tokenizer.json` through the engine's own loader.
fn load(path: &Path) -> Tokenizer {
    let dir = path.parent().unwrap().to_path_buf();
    let files = ModelFiles {
        config: dir.join("config.json"),
        dir,
        weights: Vec::new(),
        tokenizer: path.to_path_buf(),
        tokenizer_config: None,
        generation_config: None,
        chat_template_jinja: None,
    };
    Tokenizer::load(&files).unwrap()
}

fn demo() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_demo_model(dir.path(), DemoSize::Tiny, 0).unwrap();
        load(&dir.path().join("tokenizer.json"))
    })
}

fn fixture() -> Tokenizer {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    load(&root.join("qwen3/tokenizer.json"))
}

/// Whole-word pieces of the byte-fallback vocabulary; anything else is spelt
/// with single characters or `<0xNN>` byte tokens.
const WORDS: [&str; 9] = [
    "▁Hello",
    "▁world",
    "▁the",
    "▁unbeliev",
    "able",
    "▁story",
    "▁café",
    "▁is",
    "▁a",
];

/// A Llama-2 style tokenizer: BPE with `byte_fallback`, `<0x00>`…`<0xFF>`,
/// "▁" for spaces, and either Llama-2's Replace/ByteFallback/Fuse/Strip
/// decoder or a ByteFallback/Metaspace/Fuse one.
fn byte_fallback(metaspace_decoder: bool) -> &'static Tokenizer {
    static TOKS: [OnceLock<Tokenizer>; 2] = [OnceLock::new(), OnceLock::new()];
    TOKS[metaspace_decoder as usize].get_or_init(|| build_byte_fallback(metaspace_decoder))
}

fn build_byte_fallback(metaspace_decoder: bool) -> Tokenizer {
    let mut pieces: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let chars = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'é";
    pieces.extend(chars.chars().map(String::from));
    let mut merges = Vec::new();
    for word in WORDS {
        let cs: Vec<char> = word.chars().collect();
        for n in 2..=cs.len() {
            let left: String = cs[..n - 1].iter().collect();
            let whole: String = cs[..n].iter().collect();
            if !pieces.contains(&whole) {
                merges.push((left, cs[n - 1].to_string()));
                pieces.push(whole);
            }
        }
    }
    let vocab: Vocab = pieces.into_iter().zip(0u32..).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token("<unk>".into())
        .byte_fallback(true)
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_normalizer(Some(NormalizerSequence::new(vec![
        Prepend::new("▁".into()).into(),
        Replace::new(" ", "▁").unwrap().into(),
    ])))
    .unwrap();
    let decoder = if metaspace_decoder {
        vec![
            // Per token, before Fuse: it drops every "▁" of token 0.
            ByteFallback::new().into(),
            Metaspace::new('▁', PrependScheme::First, true).into(),
            Fuse::new().into(),
        ]
    } else {
        vec![
            Replace::new("▁", " ").unwrap().into(),
            ByteFallback::new().into(),
            Fuse::new().into(),
            Strip::new(' ', 1, 0).into(),
        ]
    };
    tok.with_decoder(Some(DecoderSequence::new(decoder)));
    tok.add_special_tokens(["<unk>", "<s>", "</s>"].map(|t| AddedToken::from(t, true)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path, false).unwrap();
    load(&path)
}

fn id(tok: &Tokenizer, piece: &str) -> u32 {
    tok.token_to_id(piece)
        .unwrap_or_else(|| panic!("no token {piece:?}"))
}

/// Streams `ids` after `prompt`; returns every delta, the last from `finish`.
fn stream(tok: &Tokenizer, prompt: &[u32], ids: &[u32], skip: bool) -> Vec<String> {
    let mut detok = IncrementalDetokenizer::new(prompt, skip);
    let mut deltas: Vec<String> = ids.iter().map(|&t| detok.push(tok, t).unwrap()).collect();
    deltas.push(detok.finish(tok).unwrap());
    assert_eq!(deltas.concat(), detok.text());
    assert!(!detok.has_pending());
    deltas
}

/// Valid text streams as whole characters and adds up to the text.
fn assert_streams_exactly(tok: &Tokenizer, text: &str) {
    let ids = tok.encode(text, false).unwrap();
    let deltas = stream(tok, &[], &ids, true);
    let full = tok.decode(&ids, true).unwrap();
    assert_eq!(deltas.concat(), full, "{text:?}");
    for d in &deltas {
        assert!(
            !d.contains(FFFD),
            "delta {d:?} of {text:?} split a character"
        );
    }
}

#[test]
fn byte_level_streams_cjk_emoji_and_accents() {
    let fixture = fixture();
    for tok in [demo(), &fixture] {
        for text in SAMPLES {
            assert_streams_exactly(tok, text);
            assert_eq!(
                tok.decode(&tok.encode(text, false).unwrap(), true).unwrap(),
                text
            );
        }
    }
}

#[test]
fn byte_fallback_streams_cjk_emoji_and_accents() {
    for metaspace in [false, true] {
        let tok = byte_fallback(metaspace);
        for text in SAMPLES {
            assert_streams_exactly(tok, text);
        }
    }
}

#[test]
fn byte_fallback_char_is_emitted_only_when_complete() {
    for metaspace in [false, true] {
        let tok = byte_fallback(metaspace);
        for (ch, bytes) in [
            ("中", &[0xE4, 0xB8, 0xAD][..]),
            ("🙂", &[0xF0, 0x9F, 0x99, 0x82]),
        ] {
            let ids: Vec<u32> = bytes
                .iter()
                .map(|b| id(tok, &format!("<0x{b:02X}>")))
                .collect();
            assert_eq!(
                tok.encode(ch, false).unwrap()[1..],
                ids[..],
                "{ch} is byte tokens"
            );
            let mut detok = IncrementalDetokenizer::new(&[id(tok, "▁a")], true);
            let deltas: Vec<String> = ids.iter().map(|&t| detok.push(tok, t).unwrap()).collect();
            let mut want = vec![String::new(); ids.len() - 1];
            want.push(ch.to_string());
            assert_eq!(deltas, want);
            assert_eq!(detok.text(), ch);
        }
    }
}

#[test]
fn byte_level_split_char_is_held_then_flushed() {
    // GPT-2's byte→char map sends 0xE4 to 'ä' and 0xB8 to '¸'.
    let tok = demo();
    let (e4, b8) = (id(tok, "ä"), id(tok, "¸"));
    let mut detok = IncrementalDetokenizer::new(&[], true);
    assert_eq!(detok.push(tok, e4).unwrap(), "");
    assert_eq!(detok.push(tok, b8).unwrap(), "");
    assert!(detok.has_pending());
    // Generation ended mid-character: finish shows what decode shows.
    let tail = detok.finish(tok).unwrap();
    assert_eq!(tail, tok.decode(&[e4, b8], true).unwrap());
    assert_eq!(tail, FFFD.to_string());
}

#[test]
fn special_tokens_are_skipped_or_kept() {
    let tok = demo();
    let mut ids = tok.encode("Hi", false).unwrap();
    ids.push(id(tok, "<|im_end|>"));
    ids.extend(tok.encode(" there", false).unwrap());
    assert_eq!(stream(tok, &[], &ids, true).concat(), "Hi there");
    assert_eq!(stream(tok, &[], &ids, false).concat(), "Hi<|im_end|> there");

    let bf = byte_fallback(false);
    let ids = [id(bf, "▁Hello"), id(bf, "</s>"), id(bf, "▁world")];
    assert_eq!(stream(bf, &[], &ids, true).concat(), "Hello world");
    assert_eq!(
        stream(bf, &[], &ids, false).concat(),
        bf.decode(&ids, false).unwrap()
    );
}

#[test]
fn spaces_at_token_boundaries_are_kept() {
    let tok = demo();
    let ids = tok.encode("Hello world, and the rest", false).unwrap();
    let deltas = stream(tok, &[], &ids, true);
    for (i, &t) in ids.iter().enumerate() {
        if tok.id_to_token(t).unwrap().starts_with('Ġ') {
            assert!(
                deltas[i].starts_with(' '),
                "Ġ token {i} gave {:?}",
                deltas[i]
            );
        }
    }

    let bf = byte_fallback(false);
    let ids = bf.encode("Hello world is a story", false).unwrap();
    let deltas = stream(bf, &[], &ids, true);
    // The very first "▁" is the one the normalizer prepended: dropped.
    assert_eq!(deltas[..5], ["Hello", " world", " is", " a", " story"]);
}

#[test]
fn prompt_context_decides_the_first_tokens_space() {
    for metaspace in [false, true] {
        let tok = byte_fallback(metaspace);
        let world = [id(tok, "▁world")];
        assert_eq!(stream(tok, &[], &world, true).concat(), "world");
        assert_eq!(
            stream(tok, &[id(tok, "▁Hello")], &world, true).concat(),
            " world"
        );
        // Prompt ends mid-word: the continuation gets no space, the next word does.
        let prompt = tok.encode("the unbeliev", false).unwrap();
        let out = [id(tok, "able"), id(tok, "▁story")];
        assert_eq!(stream(tok, &prompt, &out, true), ["able", " story", ""]);
    }
    // Byte-level decoding needs no context, and a long prompt costs nothing.
    let tok = demo();
    let prompt = tok.encode(&SAMPLES.concat().repeat(20), false).unwrap();
    let out = tok.encode(" and more", false).unwrap();
    assert_eq!(stream(tok, &prompt, &out, true).concat(), " and more");
}

#[test]
fn prompt_ending_mid_character_does_not_swallow_output() {
    // A token-id prompt may end inside a character; the output's bytes must
    // not be read as its continuation ("ä¸" is 0xE4 0xB8, one U+FFFD).
    let tok = demo();
    let (e4, b8, ad, b) = (id(tok, "ä"), id(tok, "¸"), id(tok, "Ń"), id(tok, "b"));
    for out in [&[b8, b][..], &[b8, ad, b]] {
        let want = tok.decode(out, true).unwrap();
        assert!(want.starts_with(FFFD));
        assert_eq!(stream(tok, &[id(tok, "a"), e4], out, true).concat(), want);
    }
}

#[test]
fn window_stays_small_on_long_and_garbage_output() {
    let tok = demo();
    let ids = tok.encode(&SAMPLES.concat().repeat(30), false).unwrap();
    let mut detok = IncrementalDetokenizer::new(&ids[..100], true);
    for &t in &ids {
        detok.push(tok, t).unwrap();
        assert!(detok.window_len() <= 8, "window {}", detok.window_len());
    }
    // 0xFF is never valid UTF-8: held at most MAX_HELD_TOKENS, then emitted.
    let ff = id(tok, "ÿ");
    let mut detok = IncrementalDetokenizer::new(&[], true);
    let mut emitted = 0;
    for _ in 0..100 {
        emitted += detok.push(tok, ff).unwrap().chars().count();
        assert!(detok.window_len() <= 2 * (MAX_HELD_TOKENS + 1));
    }
    assert!(emitted > 0, "garbage must not be held forever");
    detok.finish(tok).unwrap();
    assert_eq!(detok.text(), tok.decode(&[ff; 100], true).unwrap());
}

/// A random output: pieces of sample text (encoded) mixed with arbitrary
/// ids (special, unknown, stray bytes; reduced modulo the vocabulary).
fn random_output() -> impl Strategy<Value = Vec<Result<String, u32>>> {
    let words: Vec<String> = SAMPLES
        .concat()
        .split_inclusive(' ')
        .map(String::from)
        .collect();
    let piece = prop_oneof![
        3 => prop::sample::select(words).prop_map(Ok),
        1 => any::<u32>().prop_map(Err),
    ];
    prop::collection::vec(piece, 0..16)
}

fn ids_of(tok: &Tokenizer, pieces: &[Result<String, u32>]) -> Vec<u32> {
    let ids_past_vocab = tok.vocab_size() as u32 + 2;
    let mut ids = Vec::new();
    for piece in pieces {
        match piece {
            Ok(text) => ids.extend(tok.encode(text, false).unwrap()),
            Err(raw) => ids.push(raw % ids_past_vocab),
        }
    }
    ids
}

/// Deltas add up to the one-shot decode. Carve-out: once the ids hold
/// invalid UTF-8, decoders disagree with themselves on what one U+FFFD
/// stands for (byte-fallback turns a whole byte run into U+FFFDs if any byte
/// is bad, though we emitted its valid start already). Then both texts must
/// agree up to the first U+FFFD, both show one, and both end in U+FFFD or
/// neither does.
fn check_sum(tok: &Tokenizer, ids: &[u32], skip: bool) -> Result<(), TestCaseError> {
    let streamed = stream(tok, &[], ids, skip).concat();
    let full = tok.decode(ids, skip).unwrap();
    match full.find(FFFD) {
        None => prop_assert_eq!(streamed, full),
        Some(bad) => {
            prop_assert_eq!(&streamed[..bad], &full[..bad]);
            prop_assert!(streamed.contains(FFFD));
            prop_assert_eq!(streamed.ends_with(FFFD), full.ends_with(FFFD));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn deltas_add_up_to_the_full_decode(pieces in random_output(), skip in any::<bool>()) {
        for tok in [demo(), byte_fallback(false), byte_fallback(true)] {
            check_sum(tok, &ids_of(tok, &pieces), skip)?;
        }
    }
}
