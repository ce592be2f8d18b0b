//! Random weights, generated lazily tensor by tensor into `model.safetensors`.
//!
//! Each tensor owns a ChaCha8 stream (keyed by the seed, stream = hash of its
//! name) and each element uses one 32-bit word of it, so any chunk can seek to
//! its place: generation is parallel yet the bytes never depend on thread count
//! or tensor order. Only one tensor is in memory at a time (≤ 13 MB for small).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use safetensors::{Dtype, View};

use super::spec::{DemoDtype, DemoSpec, Init, TensorSpec};
use super::DemoError;

/// Elements generated per parallel work item (even: Box–Muller makes pairs).
const CHUNK: usize = 1 << 16;

/// A tensor whose bytes are produced only when the writer asks for them.
struct LazyTensor {
    spec: TensorSpec,
    dtype: DemoDtype,
    seed: u64,
}

impl View for LazyTensor {
    fn dtype(&self) -> Dtype {
        match self.dtype {
            DemoDtype::F32 => Dtype::F32,
            DemoDtype::Bf16 => Dtype::BF16,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.spec.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(tensor_bytes(&self.spec, self.dtype, self.seed))
    }

    fn data_len(&self) -> usize {
        self.spec.numel() * self.dtype.size_in_bytes()
    }
}

/// Little-endian bytes of one tensor.
pub fn tensor_bytes(spec: &TensorSpec, dtype: DemoDtype, seed: u64) -> Vec<u8> {
    let width = dtype.size_in_bytes();
    let mut bytes = vec![0u8; spec.numel() * width];
    let stream = xxhash_rust::xxh3::xxh3_64(spec.name.as_bytes());
    bytes
        .par_chunks_mut(CHUNK * width)
        .enumerate()
        .for_each(|(chunk, out)| {
            let mut values = vec![0f32; out.len() / width];
            match spec.init {
                Init::Ones => values.fill(1.0),
                Init::Normal { std } => {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(stream);
                    rng.set_word_pos((chunk * CHUNK) as u128);
                    fill_normal(&mut rng, &mut values, std);
                }
            }
            encode(&values, dtype, out);
        });
    bytes
}

/// Box–Muller: two uniform words in, two N(0, std²) samples out.
fn fill_normal(rng: &mut ChaCha8Rng, out: &mut [f32], std: f32) {
    const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
    for pair in out.chunks_mut(2) {
        // u1 in (0, 1] so ln never sees 0; u2 in [0, 1).
        let u1 = ((rng.next_u32() >> 8) + 1) as f32 * SCALE;
        let u2 = (rng.next_u32() >> 8) as f32 * SCALE;
        let r = std * (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
        pair[0] = r * c;
        if let Some(second) = pair.get_mut(1) {
            *second = r * s;
        }
    }
}

fn encode(values: &[f32], dtype: DemoDtype, out: &mut [u8]) {
    match dtype {
        DemoDtype::F32 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        DemoDtype::Bf16 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
            }
        }
    }
}

/// Write `model.safetensors` (atomically: the crate writes a temp file and
/// renames it). Metadata `format: pt` is what transformers requires to load it.
pub fn write_safetensors(spec: &DemoSpec, seed: u64, path: &Path) -> Result<(), DemoError> {
    let tensors = spec.tensors().into_iter().map(|t| {
        let name = t.name.clone();
        let lazy = LazyTensor {
            spec: t,
            dtype: spec.dtype,
            seed,
        };
        (name, lazy)
    });
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let failed = |message: String| DemoError::Weights {
        path: path.to_path_buf(),
        message,
    };
    safetensors::serialize_to_file(tensors, Some(metadata), path)
        .map_err(|e| failed(e.to_string()))?;
    // The crate's temp file is created 0600; make the weights as readable as
    // the JSON files beside them (a server may run as another user).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| failed(format!("setting permissions: {e}")))?;
    }
    Ok(())
}
