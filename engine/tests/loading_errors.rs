//! A broken model directory must fail with an error that names what is
//! wrong: the missing file, the missing tensor, the unknown architecture.

use std::path::{Path, PathBuf};

use candle_core::DType;
use tandem_engine::LoadedModel;

fn fixture_copy(name: &str) -> tempfile::TempDir {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/models")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> String {
    match LoadedModel::load(dir, DType::F32) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_tokenizer_is_named() {
    let dir = fixture_copy("llama");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("tokenizer.json"), "{msg}");
}

#[test]
fn missing_weights_are_named() {
    let dir = fixture_copy("llama");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn missing_shard_is_named() {
    let dir = fixture_copy("llama_sharded");
    let shard = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("model-") && n.ends_with(".safetensors"))
        .expect("a shard");
    std::fs::remove_file(dir.path().join(&shard)).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains(&shard), "{msg}");
}

#[test]
fn unknown_architecture_is_named() {
    let dir = fixture_copy("llama");
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("LlamaForCausalLM", "FalconForCausalLM");
    std::fs::write(&path, text).unwrap();
    let msg = load_error(dir.path());
    assert!(
        msg.contains("FalconForCausalLM") && msg.contains("LlamaForCausalLM"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = fixture_copy("llama");
    // Claim one more layer than the checkpoint has.
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let layers = cfg["num_hidden_layers"].as_u64().unwrap();
    cfg["num_hidden_layers"] = (layers + 1).into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains(&format!("model.layers.{layers}.")), "{msg}");
}

#[test]
fn not_a_directory_says_what_to_do() {
    let msg = load_error(Path::new("/nonexistent/model"));
    assert!(msg.contains("demo-model"), "{msg}");
}
