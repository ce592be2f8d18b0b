//! Demo model generator: a Hugging Face–style Llama directory with random
//! weights and a tokenizer trained on the spot, so tandem runs, tests and demos
//! need no network and no downloaded checkpoint.
//!
//! `write_demo_model` is what `tandem demo-model --out DIR --size tiny|small`
//! calls. The output is gibberish by design; the README it writes says so.

mod configs;
mod spec;
pub(crate) mod tokenizer;
mod weights;

#[cfg(test)]
mod naive_llama;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use configs::{CHAT_TEMPLATE, RANDOM_WEIGHTS_NOTE};
pub use spec::{DemoDtype, DemoSpec, Init, TensorSpec};
pub use tokenizer::{SpecialIds, BOS, EOT, IM_END, IM_START};

/// Seed the CLI uses when none is given.
pub const DEFAULT_SEED: u64 = 0;

/// Bump when the bytes written for a (size, seed) change, so old directories
/// are regenerated instead of reused.
const FORMAT_VERSION: u32 = 1;

/// Marker written last: its presence means the directory is complete.
const MARKER: &str = "tandem_demo.json";

/// Which demo model to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DemoSize {
    /// ~0.2M parameters, f32: unit and integration tests.
    Tiny,
    /// ~82M parameters, bf16: demos and benchmarks with realistic shapes.
    Small,
}

impl DemoSize {
    pub fn spec(self) -> DemoSpec {
        DemoSpec::for_size(self)
    }
}

impl fmt::Display for DemoSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DemoSize::Tiny => "tiny",
            DemoSize::Small => "small",
        })
    }
}

impl FromStr for DemoSize {
    type Err = DemoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tiny" => Ok(DemoSize::Tiny),
            "small" => Ok(DemoSize::Small),
            _ => Err(DemoError::UnknownSize(s.to_string())),
        }
    }
}

/// What was written (or found already written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoModelInfo {
    pub dir: PathBuf,
    pub parameters: u64,
    pub vocab_size: usize,
    pub size: DemoSize,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("unknown demo model size {0:?}: use \"tiny\" or \"small\"")]
    UnknownSize(String),
    #[error(
        "could not {action} {path}: {source}; check that the directory is writable \
         and the disk has space, or pass another --out"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{0} already holds a model that tandem did not generate (no {MARKER}); \
         refusing to overwrite it: pass an empty or new --out directory"
    )]
    NotADemoDir(PathBuf),
    #[error("building the demo tokenizer failed: {0} (a bug in tandem; please report it)")]
    Tokenizer(String),
    #[error(
        "writing weights to {path} failed: {message}; check that the directory is \
         writable and the disk has space (small needs ~170 MB)"
    )]
    Weights { path: PathBuf, message: String },
}

/// Contents of the marker file.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Marker {
    format_version: u32,
    size: DemoSize,
    seed: u64,
    parameters: u64,
    vocab_size: usize,
    /// File name → byte length, to notice truncated or edited files.
    files: BTreeMap<String, u64>,
}

/// Files a demo directory holds besides the marker.
const FILES: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
    "README.md",
];

/// Write a demo model of `size` into `out` (created if missing).
///
/// Returns at once if `out` already holds a complete demo model of the same
/// size, seed and format. Refuses to overwrite a directory holding a model it
/// did not write.
pub fn write_demo_model(out: &Path, size: DemoSize, seed: u64) -> Result<DemoModelInfo, DemoError> {
    let spec = size.spec();
    let info = DemoModelInfo {
        dir: out.to_path_buf(),
        parameters: spec.parameter_count(),
        vocab_size: spec.vocab_size,
        size,
    };
    let marker_path = out.join(MARKER);
    match read_marker(&marker_path) {
        Some(m) if m.format_version == FORMAT_VERSION && m.size == size && m.seed == seed => {
            if files_match(out, &m.files) {
                tracing::debug!(dir = %out.display(), "demo model already present");
                return Ok(info);
            }
        }
        Some(_) => {}
        None => {
            if out.join("config.json").exists() || out.join("model.safetensors").exists() {
                return Err(DemoError::NotADemoDir(out.to_path_buf()));
            }
        }
    }

    fs::create_dir_all(out).map_err(io_err("create directory", out))?;
    // Drop a stale marker first: an interrupted rewrite must not look complete.
    if marker_path.exists() {
        fs::remove_file(&marker_path).map_err(io_err("remove", &marker_path))?;
    }

    let trained = tokenizer::train(spec.vocab_size)?;
    let ids = trained.special;
    write_atomic(&out.join("tokenizer.json"), trained.to_json()?.as_bytes())?;
    write_json(&out.join("config.json"), &configs::config_json(&spec, &ids))?;
    write_json(
        &out.join("generation_config.json"),
        &configs::generation_config_json(&ids),
    )?;
    write_json(
        &out.join("tokenizer_config.json"),
        &configs::tokenizer_config_json(&spec, &ids),
    )?;
    write_atomic(
        &out.join("README.md"),
        configs::readme(size, &spec, seed).as_bytes(),
    )?;
    weights::write_safetensors(&spec, seed, &out.join("model.safetensors"))?;

    let mut files = BTreeMap::new();
    for name in FILES {
        let path = out.join(name);
        let len = fs::metadata(&path).map_err(io_err("read", &path))?.len();
        files.insert(name.to_string(), len);
    }
    let marker = Marker {
        format_version: FORMAT_VERSION,
        size,
        seed,
        parameters: info.parameters,
        vocab_size: info.vocab_size,
        files,
    };
    write_json(&marker_path, &marker)?;
    Ok(info)
}

fn read_marker(path: &Path) -> Option<Marker> {
    let text = fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn files_match(dir: &Path, files: &BTreeMap<String, u64>) -> bool {
    files.len() == FILES.len()
        && FILES.iter().all(|name| files.contains_key(*name))
        && files.iter().all(|(name, len)| {
            fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.len() == *len)
        })
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DemoError + 'a {
    move |source| DemoError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DemoError> {
    let mut text = serde_json::to_string_pretty(value).expect("demo JSON values always serialise");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Write via a sibling temp file and rename, so readers never see half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))
}
