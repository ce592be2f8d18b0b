use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tandem_engine::demo::{write_demo_model, DemoSize};

use super::tokens::PromptTokenizer;
use super::*;

fn tokenizer() -> (tempfile::TempDir, PromptTokenizer) {
    let dir = tempfile::tempdir().unwrap();
    write_demo_model(dir.path(), DemoSize::Tiny, 0).unwrap();
    let tok = PromptTokenizer::load(dir.path()).unwrap();
    (dir, tok)
}

fn sample_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sharegpt_sample.json")
}

#[test]
fn random_prompts_have_exact_token_lengths() {
    let (_dir, tok) = tokenizer();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let spec = random::RandomSpec {
        num_prompts: 20,
        input_len: 64,
        output_len: 16,
        range_ratio: 0.5,
    };
    let reqs = random::build(&spec, &tok, &mut rng).unwrap();
    assert_eq!(reqs.len(), 20);
    for r in &reqs {
        assert!((32..=96).contains(&r.prompt_len), "{}", r.prompt_len);
        assert_eq!(
            tok.count(&r.prompt).unwrap(),
            r.prompt_len,
            "prompt_len is the true count"
        );
        assert!((8..=24).contains(&r.output_len));
    }
    // Lengths spread over the range instead of sticking to one value.
    let distinct: std::collections::HashSet<_> = reqs.iter().map(|r| r.prompt_len).collect();
    assert!(distinct.len() > 5);
}

#[test]
fn random_lengths_hit_the_target_without_range() {
    let (_dir, tok) = tokenizer();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let spec = random::RandomSpec {
        num_prompts: 10,
        input_len: 100,
        output_len: 8,
        range_ratio: 0.0,
    };
    let reqs = random::build(&spec, &tok, &mut rng).unwrap();
    let hits = reqs.iter().filter(|r| r.prompt_len == 100).count();
    assert!(
        hits >= 9,
        "only {hits}/10 prompts re-encode to exactly 100 tokens"
    );
}

#[test]
fn sharegpt_takes_first_human_turn_and_reply_length() {
    let (_dir, tok) = tokenizer();
    let pairs = sharegpt::load_pairs(&sample_file()).unwrap();
    assert_eq!(pairs.len(), 4, "the model-first conversation is skipped");
    assert_eq!(pairs[1].0, "Name two latency metrics of an LLM server.");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let reqs = sharegpt::build(&sample_file(), 6, None, &tok, &mut rng).unwrap();
    assert_eq!(reqs.len(), 6, "short files repeat");
    for r in &reqs {
        assert!(r.output_len >= 4, "too-short replies are skipped");
        assert_eq!(r.prompt_len, tok.count(&r.prompt).unwrap());
    }
    let fixed = sharegpt::build(&sample_file(), 3, Some(32), &tok, &mut rng).unwrap();
    assert!(fixed.iter().all(|r| r.output_len == 32));
}

#[test]
fn sharegpt_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"not": "a list"}"#).unwrap();
    let e = sharegpt::load_pairs(&bad).unwrap_err().to_string();
    assert!(e.contains("not ShareGPT JSON"), "{e}");
    let e = sharegpt::load_pairs(&dir.path().join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--dataset-path"), "{e}");
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    assert!(sharegpt::load_pairs(&empty)
        .unwrap_err()
        .to_string()
        .contains("no usable"));
}

#[test]
fn prefix_groups_share_their_prefix() {
    let (_dir, tok) = tokenizer();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let spec = prefix::PrefixSpec {
        num_prompts: 6,
        num_groups: 2,
        prefix_len: 50,
        suffix_len: 5,
        output_len: 4,
    };
    let reqs = prefix::build(&spec, &tok, &mut rng).unwrap();
    let head = |r: &SampleRequest| r.prompt.chars().take(40).collect::<String>();
    assert_eq!(head(&reqs[0]), head(&reqs[2]));
    assert_eq!(head(&reqs[1]), head(&reqs[3]));
    assert_ne!(head(&reqs[0]), head(&reqs[1]));
    assert_ne!(reqs[0].prompt, reqs[2].prompt, "suffixes differ");
    assert!(reqs.iter().all(|r| r.prompt_len >= 50));
}

#[test]
fn rag_requests_carry_the_index_name() {
    let (_dir, tok) = tokenizer();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let spec = random::RandomSpec {
        num_prompts: 3,
        input_len: 10,
        output_len: 8,
        range_ratio: 0.0,
    };
    let reqs = rag::build("docs", Some(&sample_file()), &spec, &tok, &mut rng).unwrap();
    assert_eq!(reqs.len(), 3);
    assert!(reqs
        .iter()
        .all(|r| r.extra_body["index_name"] == "docs" && r.output_len == 8));
    let body = crate::serve::client::request_body(
        &crate::serve::client::ClientConfig {
            base_url: String::new(),
            model: "m".into(),
            endpoint: crate::serve::client::Endpoint::Chat,
            ignore_eos: false,
            temperature: 0.0,
            api_key: None,
        },
        &reqs[0],
    );
    assert_eq!(body["index_name"], "docs");
    assert_eq!(body["messages"][0]["role"], "user");
}

#[test]
fn mixed_has_the_asked_share_of_long_prompts() {
    let (_dir, tok) = tokenizer();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let spec = mixed::MixedSpec {
        num_prompts: 200,
        long_fraction: 0.25,
        short_input_len: 8,
        long_input_len: 40,
        output_len: 4,
    };
    let reqs = mixed::build(&spec, &tok, &mut rng).unwrap();
    let long = reqs.iter().filter(|r| r.class == "long").count();
    assert!((30..=70).contains(&long), "{long} long of 200");
    assert!(reqs
        .iter()
        .filter(|r| r.class == "long")
        .all(|r| r.prompt_len >= 38));
    assert!(reqs
        .iter()
        .filter(|r| r.class == "short")
        .all(|r| r.prompt_len <= 10));
}

#[test]
fn range_ratio_bounds_lengths() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let v = sample_lengths(&mut rng, 100, 0.1, 1000);
    assert!(v.iter().all(|&l| (90..=110).contains(&l)));
    // len 1 with a wide ratio: 0 tokens is never asked for.
    let tiny = sample_lengths(&mut rng, 1, 0.9, 50);
    assert!(tiny.iter().all(|&l| (1..=2).contains(&l)));
}
