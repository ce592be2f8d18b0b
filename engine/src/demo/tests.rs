//! Tests of the demo model generator. Only the tiny model is ever written
//! here; the small one is checked through its arithmetic.

use std::fs;
use std::path::PathBuf;

use minijinja::{context, Environment};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::naive_llama::{greedy, NaiveLlama};
use super::*;

/// A fresh scratch directory per test (no tempfile dependency in the engine).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tandem-demo-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
}

fn tiny_tokenizer() -> Tokenizer {
    tokenizer::train(DemoSize::Tiny.spec().vocab_size)
        .unwrap()
        .tokenizer
}

#[test]
fn size_parses_and_displays() {
    for size in [DemoSize::Tiny, DemoSize::Small] {
        assert_eq!(size.to_string().parse::<DemoSize>().unwrap(), size);
    }
    assert_eq!("SMALL".parse::<DemoSize>().unwrap(), DemoSize::Small);
    let err = "huge".parse::<DemoSize>().unwrap_err().to_string();
    assert!(err.contains("\"tiny\" or \"small\""), "{err}");
}

#[test]
fn parameter_count_matches_formula_and_tensor_list() {
    assert_eq!(DemoSize::Tiny.spec().parameter_count(), 223_552);
    assert_eq!(DemoSize::Small.spec().parameter_count(), 81_808_128);
    for size in [DemoSize::Tiny, DemoSize::Small] {
        let spec = size.spec();
        let summed: usize = spec.tensors().iter().map(TensorSpec::numel).sum();
        assert_eq!(summed as u64, spec.parameter_count(), "{size}");
        assert_eq!(spec.tensors().len(), 2 + 9 * spec.num_hidden_layers);
    }
}

#[test]
fn tiny_model_writes_complete_directory() {
    let scratch = Scratch::new("writes");
    let info = write_demo_model(&scratch.0, DemoSize::Tiny, 7).unwrap();
    assert_eq!(info.dir, scratch.0);
    assert_eq!(info.size, DemoSize::Tiny);
    assert_eq!(info.vocab_size, 2048);
    assert_eq!(info.parameters, 223_552);
    for f in FILES.iter().chain([&MARKER]) {
        assert!(scratch.0.join(f).is_file(), "{f} missing");
    }
    let readme = fs::read_to_string(scratch.0.join("README.md")).unwrap();
    assert!(readme.contains("random"), "{readme}");

    // Every tensor present with HF names, f32, shapes as specified; no lm_head.
    let bytes = fs::read(scratch.0.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let spec = DemoSize::Tiny.spec();
    assert_eq!(st.len(), spec.tensors().len());
    for t in spec.tensors() {
        let view = st.tensor(&t.name).unwrap();
        assert_eq!(view.shape(), t.shape.as_slice(), "{}", t.name);
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
    }
    assert!(st.tensor("lm_head.weight").is_err());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(scratch.0.join("model.safetensors"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o044,
            0o044,
            "weights not readable by others: {mode:o}"
        );
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
}

#[test]
fn config_files_have_expected_fields() {
    let scratch = Scratch::new("config");
    write_demo_model(&scratch.0, DemoSize::Tiny, 0).unwrap();
    let c = read_json(scratch.0.join("config.json"));
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["hidden_size"], 64);
    assert_eq!(c["num_hidden_layers"], 2);
    assert_eq!(c["num_attention_heads"], 4);
    assert_eq!(c["num_key_value_heads"], 2);
    assert_eq!(c["head_dim"], 16);
    assert_eq!(c["intermediate_size"], 176);
    assert_eq!(c["vocab_size"], 2048);
    assert_eq!(c["max_position_embeddings"], 4096);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["hidden_act"], "silu");
    assert_eq!(c["torch_dtype"], "float32");
    assert!(c["rope_theta"].as_f64().unwrap() > 0.0);
    assert!(c["rms_norm_eps"].as_f64().unwrap() > 0.0);
    assert!(c["tandem_note"]
        .as_str()
        .unwrap()
        .contains("random weights"));
    // Special tokens take the last four ids.
    assert_eq!(c["bos_token_id"], 2044);
    assert_eq!(c["eos_token_id"], serde_json::json!([2047, 2045]));

    let g = read_json(scratch.0.join("generation_config.json"));
    assert_eq!(g["bos_token_id"], 2044);
    assert_eq!(g["eos_token_id"], serde_json::json!([2047, 2045]));
    assert_eq!(g["temperature"], 0.7);
    assert_eq!(g["top_p"], 0.9);

    let t = read_json(scratch.0.join("tokenizer_config.json"));
    assert_eq!(t["bos_token"], BOS);
    assert_eq!(t["eos_token"], IM_END);
    assert_eq!(t["add_bos_token"], true);
    assert_eq!(t["model_max_length"], 4096);
    assert_eq!(t["chat_template"], CHAT_TEMPLATE);
    assert_eq!(t["added_tokens_decoder"]["2047"]["content"], IM_END);
    assert_eq!(t["added_tokens_decoder"]["2047"]["special"], true);
}

#[test]
fn small_config_says_bfloat16() {
    let spec = DemoSize::Small.spec();
    let ids = SpecialIds {
        bos: 8188,
        end_of_text: 8189,
        im_start: 8190,
        im_end: 8191,
    };
    let c = configs::config_json(&spec, &ids);
    assert_eq!(c["torch_dtype"], "bfloat16");
    assert_eq!(c["head_dim"], 64);
    assert_eq!(c["vocab_size"], 8192);
}

#[test]
fn tokenizer_round_trips_text_exactly() {
    let tok = tiny_tokenizer();
    let samples = [
        "The baker lifts the cloth and presses a floured finger into the dough.",
        "  leading spaces, tabs\tand\nnewlines\n\n survive ",
        "café, naïve, Grüße aus München",
        "你好，世界！日本語のテキスト。안녕하세요",
        "emoji 🚲☕🎉👍🏽❤️ and a flag 🇯🇵",
        "unseen bytes: \u{0}\u{7f} ℵ ∑ 𝄞",
    ];
    for text in samples {
        let enc = tok.encode(text, false).unwrap();
        assert!(!enc.get_ids().is_empty());
        assert!(enc.get_ids().iter().all(|&id| id < 2044), "{text}");
        let back = tok.decode(enc.get_ids(), false).unwrap();
        assert_eq!(back, text);
    }
    // Training learned multi-byte merges for the non-ASCII corpus words.
    let ids = tok.encode("Grüße 你好", false).unwrap();
    assert!(ids.get_ids().len() < "Grüße 你好".len());
}

#[test]
fn byte_alphabet_and_special_tokens_are_in_the_vocab() {
    let tok = tiny_tokenizer();
    let vocab = tok.get_vocab(false);
    for c in tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet() {
        assert!(
            vocab.contains_key(&c.to_string()),
            "byte symbol {c:?} missing"
        );
    }
    assert_eq!(tok.get_vocab_size(true), 2048);
    for (i, t) in [BOS, EOT, IM_START, IM_END].into_iter().enumerate() {
        let enc = tok.encode(t, false).unwrap();
        assert_eq!(enc.get_ids(), &[2044 + i as u32], "{t}");
        // Special tokens are skipped when decoding for display.
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "");
    }
    // add_special_tokens = true prepends BOS, like Llama 3.
    let enc = tok.encode("Hello", true).unwrap();
    assert_eq!(enc.get_ids()[0], 2044);
}

#[test]
fn chat_template_renders_chatml() {
    let mut env = Environment::new();
    env.add_template("chat", CHAT_TEMPLATE).unwrap();
    let tmpl = env.get_template("chat").unwrap();
    let messages = serde_json::json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi there"},
    ]);
    let out = tmpl
        .render(context! { messages => messages, bos_token => BOS, add_generation_prompt => true })
        .unwrap();
    assert_eq!(
        out,
        "<|begin_of_text|><|im_start|>system\nYou are terse.<|im_end|>\n\
         <|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    );
    // Without the generation prompt, and with OpenAI-style content parts.
    let parts = serde_json::json!([
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]);
    let out = tmpl
        .render(context! { messages => parts, bos_token => BOS, add_generation_prompt => false })
        .unwrap();
    assert_eq!(out, "<|begin_of_text|><|im_start|>user\nab<|im_end|>\n");

    // The rendered prompt tokenizes with one id per special token.
    let tok = tiny_tokenizer();
    let ids = tok.encode(out.as_str(), false).unwrap();
    let ids = ids.get_ids();
    assert_eq!(ids[..2], [2044, 2046]);
    assert_eq!(ids.iter().filter(|&&i| i >= 2044).count(), 3);
}

#[test]
fn tokenizer_training_is_deterministic() {
    for size in [DemoSize::Tiny, DemoSize::Small] {
        let n = size.spec().vocab_size;
        let a = tokenizer::train(n).unwrap().to_json().unwrap();
        let b = tokenizer::train(n).unwrap().to_json().unwrap();
        assert!(a == b, "{size}: two trainings differ");
    }
}

#[test]
fn same_seed_gives_identical_bytes_other_seed_differs() {
    let (a, b, c) = (
        Scratch::new("det-a"),
        Scratch::new("det-b"),
        Scratch::new("det-c"),
    );
    write_demo_model(&a.0, DemoSize::Tiny, 3).unwrap();
    write_demo_model(&b.0, DemoSize::Tiny, 3).unwrap();
    write_demo_model(&c.0, DemoSize::Tiny, 4).unwrap();
    for f in FILES.iter().chain([&MARKER]) {
        let (fa, fb) = (
            fs::read(a.0.join(f)).unwrap(),
            fs::read(b.0.join(f)).unwrap(),
        );
        assert!(fa == fb, "{f} differs between two writes with one seed");
    }
    let weights = |d: &Scratch| fs::read(d.0.join("model.safetensors")).unwrap();
    assert_ne!(weights(&a), weights(&c));
}

#[test]
fn second_write_reuses_the_directory() {
    let scratch = Scratch::new("idem");
    let first = write_demo_model(&scratch.0, DemoSize::Tiny, 1).unwrap();
    let weights = scratch.0.join("model.safetensors");
    let stamp = fs::metadata(&weights).unwrap().modified().unwrap();
    let again = write_demo_model(&scratch.0, DemoSize::Tiny, 1).unwrap();
    assert_eq!(first, again);
    assert_eq!(fs::metadata(&weights).unwrap().modified().unwrap(), stamp);

    // A truncated file is noticed and the model rewritten.
    fs::write(scratch.0.join("config.json"), "{}").unwrap();
    write_demo_model(&scratch.0, DemoSize::Tiny, 1).unwrap();
    assert_eq!(read_json(scratch.0.join("config.json"))["vocab_size"], 2048);

    // Another seed rewrites the weights.
    let before = fs::read(&weights).unwrap();
    write_demo_model(&scratch.0, DemoSize::Tiny, 2).unwrap();
    assert_ne!(fs::read(&weights).unwrap(), before);
}

#[test]
fn refuses_to_overwrite_a_foreign_model() {
    let scratch = Scratch::new("foreign");
    fs::create_dir_all(&scratch.0).unwrap();
    fs::write(scratch.0.join("config.json"), "{\"model_type\": \"llama\"}").unwrap();
    let err = write_demo_model(&scratch.0, DemoSize::Tiny, 0).unwrap_err();
    assert!(matches!(err, DemoError::NotADemoDir(_)), "{err}");
    assert!(err.to_string().contains("--out"), "{err}");
}

#[test]
fn unwritable_output_reports_the_path() {
    let scratch = Scratch::new("unwritable");
    fs::create_dir_all(&scratch.0).unwrap();
    let file = scratch.0.join("a-file");
    fs::write(&file, "not a directory").unwrap();
    let err = write_demo_model(&file.join("model"), DemoSize::Tiny, 0).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DemoError::Io { .. }), "{msg}");
    assert!(msg.contains("a-file") && msg.contains("--out"), "{msg}");
}

#[test]
fn weights_have_the_planned_spread() {
    let spec = DemoSize::Tiny.spec();
    for t in spec.tensors().iter().take(4) {
        let bytes = weights::tensor_bytes(t, DemoDtype::F32, 9);
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let n = v.len() as f32;
        let mean = v.iter().sum::<f32>() / n;
        let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n).sqrt();
        match t.init {
            Init::Ones => assert!(v.iter().all(|&x| x == 1.0)),
            Init::Normal { std: want } => {
                assert!(mean.abs() < 0.05 * want, "{}: mean {mean}", t.name);
                assert!((std / want - 1.0).abs() < 0.05, "{}: std {std}", t.name);
            }
        }
    }
}

#[test]
fn bf16_weights_are_rounded_f32_weights() {
    let t = &DemoSize::Small.spec().tensors()[2]; // layer 0 q_proj, 768×768
    let f = weights::tensor_bytes(t, DemoDtype::F32, 5);
    let b = weights::tensor_bytes(t, DemoDtype::Bf16, 5);
    for (f, b) in f.chunks_exact(4).zip(b.chunks_exact(2)).step_by(997) {
        let f = f32::from_le_bytes(f.try_into().unwrap());
        let b = half::bf16::from_le_bytes(b.try_into().unwrap());
        assert_eq!(half::bf16::from_f32(f), b);
    }
}

#[test]
fn greedy_output_of_tiny_model_varies() {
    let scratch = Scratch::new("greedy");
    write_demo_model(&scratch.0, DemoSize::Tiny, DEFAULT_SEED).unwrap();
    let tok = Tokenizer::from_file(scratch.0.join("tokenizer.json")).unwrap();
    let bytes = fs::read(scratch.0.join("model.safetensors")).unwrap();
    for prompt in ["The quick brown fox jumps over", "你好", "Dear Ana,"] {
        let mut model = NaiveLlama::load(&DemoSize::Tiny.spec(), &bytes);
        let ids = tok.encode(prompt, true).unwrap();
        let out = greedy(&mut model, ids.get_ids(), 32);
        let mut distinct = out.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let longest_run = out.chunk_by(|a, b| a == b).map(<[u32]>::len).max().unwrap();
        assert!(
            distinct.len() >= 16 && longest_run <= 4,
            "greedy output after {prompt:?} loops: {out:?} = {:?}",
            tok.decode(&out, false)
        );
    }
}
