//! The compiler against a real byte-level BPE vocabulary (the demo
//! tokenizer): constraints hold under random logits, errors name the field,
//! and a guide rebuilt from replayed tokens is where the live one is.

use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::demo::tokenizer::train;
use crate::tokenizer::Tokenizer;

const VOCAB: usize = 2048;
/// Padding ids past the tokenizer's vocabulary, as real models have.
const LOGITS: usize = VOCAB + 16;

fn compiler() -> &'static GuidanceCompiler {
    static C: OnceLock<(GuidanceCompiler, u32)> = OnceLock::new();
    &C.get_or_init(|| {
        let trained = train(VOCAB).unwrap();
        let eos = trained.special.end_of_text;
        let tok = Tokenizer::from_parts(trained.tokenizer, None, None, None);
        (GuidanceCompiler::new(Arc::new(tok), LOGITS, &[eos]), eos)
    })
    .0
}

fn eos() -> u32 {
    compiler().eos
}

fn decode(tokens: &[u32]) -> String {
    compiler()
        .tokenizer
        .decode(tokens, true)
        .expect("decodable")
}

/// Samples from uniform random logits under the guide until it finishes.
fn run(spec: &GuidedDecoding, seed: u64, max_tokens: usize) -> (String, bool) {
    let mut guide = compiler().compile(spec).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut logits = vec![0f32; LOGITS];
    for _ in 0..max_tokens {
        logits
            .iter_mut()
            .for_each(|l| *l = rng.random::<f32>() * 4.0);
        guide.apply(&mut logits);
        let best = (0..LOGITS)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert!(logits[best].is_finite(), "the mask left no token");
        guide.consume(best as u32);
        if best as u32 != eos() {
            out.push(best as u32);
        }
        if guide.is_finished() {
            assert!(guide.failure().is_none(), "{:?}", guide.failure());
            return (decode(&out), true);
        }
    }
    (decode(&out), false)
}

#[test]
fn choices_produce_one_of_them() {
    let choices = vec!["red".to_string(), "green".into(), "blue sky".into()];
    let spec = GuidedDecoding::Choice(choices.clone());
    for seed in 0..16 {
        let (text, done) = run(&spec, seed, 32);
        assert!(done, "seed {seed}: unfinished {text:?}");
        assert!(choices.contains(&text), "seed {seed}: {text:?}");
    }
}

#[test]
fn regex_output_matches() {
    let spec = GuidedDecoding::Regex("[0-9]{3}-[a-z]{2,4}".into());
    for seed in 0..16 {
        let (text, done) = run(&spec, seed, 32);
        assert!(done, "seed {seed}: unfinished {text:?}");
        let (digits, letters) = text.split_once('-').expect("a dash");
        assert_eq!(digits.len(), 3, "{text:?}");
        assert!(digits.chars().all(|c| c.is_ascii_digit()), "{text:?}");
        assert!((2..=4).contains(&letters.len()), "{text:?}");
        assert!(letters.chars().all(|c| c.is_ascii_lowercase()), "{text:?}");
    }
}

#[test]
fn json_schema_output_validates() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "color": {"enum": ["red", "green"]},
            "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
            "home": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 4}},
                "required": ["city"],
                "additionalProperties": false
            }
        },
        "required": ["name", "age", "color", "tags", "home"],
        "additionalProperties": false
    });
    let spec = GuidedDecoding::JsonSchema(schema);
    for seed in 0..8 {
        let (text, done) = run(&spec, seed, 200);
        assert!(done, "seed {seed}: unfinished {text:?}");
        let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
        assert!(v["name"].as_str().unwrap().chars().count() <= 6, "{text}");
        assert!((0..=150).contains(&v["age"].as_i64().unwrap()), "{text}");
        assert!(
            ["red", "green"].contains(&v["color"].as_str().unwrap()),
            "{text}"
        );
        let tags = v["tags"].as_array().unwrap();
        assert!(
            tags.len() <= 3 && tags.iter().all(|t| t.is_boolean()),
            "{text}"
        );
        assert!(v["home"]["city"].is_string(), "{text}");
        assert_eq!(v.as_object().unwrap().len(), 5, "{text}");
    }
}

#[test]
fn json_object_mode_gives_an_object() {
    for seed in 0..4 {
        let (text, done) = run(&GuidedDecoding::JsonObject, seed, 400);
        if done {
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => assert!(v.is_object(), "{text}"),
                // Valid JSON whose number (say 1e+9331525) no f64 holds.
                Err(e) => assert!(e.to_string().contains("number out of range"), "{e}: {text}"),
            }
        } else {
            // Unbounded keys and strings may not close in 400 random tokens;
            // what there is must still start an object.
            assert!(text.starts_with('{'), "{text}");
        }
    }
}

#[test]
fn lark_grammar_is_followed() {
    let spec = GuidedDecoding::Lark(
        "start: greeting \" \" NAME\ngreeting: \"hi\" | \"hello\"\nNAME: /[A-Z][a-z]{1,5}/\n"
            .into(),
    );
    for seed in 0..8 {
        let (text, done) = run(&spec, seed, 32);
        assert!(done, "seed {seed}: unfinished {text:?}");
        let (greeting, name) = text.split_once(' ').unwrap();
        assert!(["hi", "hello"].contains(&greeting), "{text:?}");
        assert!(
            name.chars().next().unwrap().is_ascii_uppercase(),
            "{text:?}"
        );
    }
}

#[test]
fn invalid_constraints_name_their_field() {
    let cases = [
        (
            GuidedDecoding::JsonSchema(serde_json::json!({"type": "no-such-type"})),
            "response_format",
        ),
        (
            GuidedDecoding::JsonSchema(serde_json::json!(3)),
            "response_format",
        ),
        (GuidedDecoding::Regex("[a-".into()), "guided_regex"),
        (GuidedDecoding::Choice(vec![]), "guided_choice"),
        (
            GuidedDecoding::Choice(vec!["a".into(), "".into()]),
            "guided_choice",
        ),
        (
            GuidedDecoding::Lark("start: undefined_rule\n".into()),
            "guided_grammar",
        ),
    ];
    for (spec, param) in cases {
        let err = compiler().compile(&spec).expect_err(&format!("{spec:?}"));
        assert_eq!(err.param(), param, "{spec:?}: {err}");
        assert!(err.to_string().starts_with(param), "{err}");
    }
}

#[test]
fn replayed_guide_continues_where_the_live_one_is() {
    let spec = GuidedDecoding::Regex("(ab|cd)+x".into());
    let mut live = compiler().compile(&spec).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut produced = Vec::new();
    let mut logits = vec![0f32; LOGITS];
    for _ in 0..3 {
        logits.iter_mut().for_each(|l| *l = rng.random::<f32>());
        live.apply(&mut logits);
        let t = (0..LOGITS)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap() as u32;
        live.consume(t);
        produced.push(t);
    }
    // A decode worker compiles the same constraint (a cache hit) and
    // replays what the prefill worker produced.
    let mut resumed = compiler().compile(&spec).unwrap();
    produced.iter().for_each(|&t| resumed.consume(t));
    let (mut a, mut b) = (vec![0f32; LOGITS], vec![0f32; LOGITS]);
    live.apply(&mut a);
    resumed.apply(&mut b);
    assert_eq!(a, b);
    assert!(a.iter().any(|l| l.is_finite()));
}

#[test]
fn padding_ids_are_never_allowed() {
    let mut guide = compiler().compile(&GuidedDecoding::JsonObject).unwrap();
    let mut logits = vec![1f32; LOGITS];
    guide.apply(&mut logits);
    assert!(logits[VOCAB..].iter().all(|l| *l == f32::NEG_INFINITY));
}
