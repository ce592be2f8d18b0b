//! Oracle parity: logits and greedy tokens of tiny random-weight models must
//! match what HF transformers computed (fixtures made by
//! `scripts/make_oracle_fixtures.py`, see tests/fixtures/README.md).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use tandem_engine::batch::{ForwardBatch, SeqChunk};
use tandem_engine::kv_cache::{ComputedBlocks, KvCacheManager, SeqBlocks};
use tandem_engine::offline::{GenerateRequest, OfflineOptions};
use tandem_engine::runner::{DeviceSpec, KvBudget, ModelRunner, RunnerOptions};
use tandem_engine::sampler::SamplingParams;
use tandem_engine::LoadedModel;

/// f32 compute against transformers' f32: the bound.
const F32_TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

struct Case {
    prompt: Vec<u32>,
    generated: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

/// The sidecar JSON names the tensor file (models that share weights share it).
fn load_cases(name: &str, generated_key: &str, logits_key: &str) -> Vec<Case> {
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("oracle/{name}.json"))).unwrap(),
    )
    .unwrap();
    let file = sidecar["tensors"]
        .as_str()
        .expect("sidecar names its tensors file");
    let path = fixtures().join("oracle").join(file);
    let map: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut cases = Vec::new();
    for i in 0.. {
        let Some(prompt) = map.get(&format!("case{i}.input_ids")) else {
            break;
        };
        cases.push(Case {
            prompt: ids(prompt),
            generated: ids(&map[&format!("case{i}.{generated_key}")]),
            logits: map[&format!("case{i}.{logits_key}")]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec2()
                .unwrap(),
        });
    }
    assert!(!cases.is_empty(), "no cases in {}", path.display());
    cases
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Teacher-forces every case's prompt + generated tokens through the paged
/// engine together: each case advances by its own chunk size per step, so
/// steps mix prefill chunks (over earlier cached blocks) and single tokens.
/// Returns the worst |Δlogit| over all positions, and how many positions
/// whose oracle top-1 leads top-2 by more than `decisive_gap` got another argmax.
fn teacher_forced(
    model: &LoadedModel,
    device: DeviceSpec,
    cases: &[Case],
    chunk_sizes: &[usize],
    block_size: usize,
    decisive_gap: f32,
) -> (f32, usize) {
    let seqs: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            let mut t = c.prompt.clone();
            t.extend(&c.generated[..c.generated.len() - 1]);
            t
        })
        .collect();
    let blocks: usize = seqs.iter().map(|s| s.len().div_ceil(block_size)).sum();
    let mut runner = ModelRunner::new(
        &model.model,
        &RunnerOptions {
            device,
            kv: KvBudget::Blocks(blocks),
            block_size,
            max_num_batched_tokens: seqs.iter().map(Vec::len).sum(),
            max_num_seqs: seqs.len(),
        },
    )
    .unwrap();
    let mut kv_blocks = KvCacheManager::new(blocks, block_size, false);
    // Allocate in reverse interleaved order so block tables are not sequential.
    let mut tables: Vec<SeqBlocks> = seqs.iter().map(|_| SeqBlocks::default()).collect();
    let per_seq: Vec<usize> = seqs.iter().map(|s| s.len().div_ceil(block_size)).collect();
    for round in 0..*per_seq.iter().max().unwrap() {
        for (i, &n) in per_seq.iter().enumerate().rev() {
            if round < n {
                let tokens = (round + 1) * block_size;
                assert!(kv_blocks.allocate_slots(&mut tables[i], tokens, ComputedBlocks::none()));
            }
        }
    }
    let mut computed = vec![0usize; seqs.len()];
    let mut worst = 0f32;
    let mut argmax_flips = 0;
    while computed.iter().zip(&seqs).any(|(c, s)| c < &s.len()) {
        let mut chunks = Vec::new();
        let mut owners = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            let n = chunk_sizes[i % chunk_sizes.len()].min(s.len() - computed[i]);
            if n == 0 {
                continue;
            }
            chunks.push(SeqChunk {
                tokens: &s[computed[i]..computed[i] + n],
                start: computed[i],
                block_table: tables[i].table(),
                wants_logits: true,
                all_logits: true,
            });
            owners.push((i, computed[i], n));
        }
        let batch = ForwardBatch::build(&chunks, block_size);
        let flat = runner.forward(&batch).unwrap();
        let logits: Vec<&[f32]> = flat.chunks(model.config.vocab_size).collect();
        let mut row = 0;
        for &(i, start, n) in &owners {
            for p in start..start + n {
                let (ours, oracle) = (logits[row], &cases[i].logits[p]);
                worst = worst.max(max_abs_diff(ours, oracle));
                if top2_gap(oracle) > decisive_gap && argmax(ours) != argmax(oracle) {
                    argmax_flips += 1;
                }
                row += 1;
            }
            computed[i] += n;
        }
    }
    (worst, argmax_flips)
}

fn teacher_forced_max_diff(
    model: &LoadedModel,
    device: DeviceSpec,
    cases: &[Case],
    chunk_sizes: &[usize],
    block_size: usize,
) -> f32 {
    teacher_forced(model, device, cases, chunk_sizes, block_size, f32::INFINITY).0
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

fn top2_gap(v: &[f32]) -> f32 {
    let top = argmax(v);
    let second = v
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != top)
        .map(|(_, &x)| x)
        .fold(f32::MIN, f32::max);
    v[top] - second
}

fn greedy_tokens(model: &LoadedModel, device: DeviceSpec, cases: &[Case]) -> Vec<Vec<u32>> {
    let requests: Vec<GenerateRequest> = cases
        .iter()
        .map(|c| GenerateRequest {
            prompt_tokens: c.prompt.clone(),
            params: SamplingParams::greedy(),
            max_tokens: c.generated.len(),
            ignore_eos: true,
        })
        .collect();
    let opts = OfflineOptions {
        device,
        ..OfflineOptions::default()
    };
    let (outputs, _) = model.generate(&requests, &opts).unwrap();
    outputs.into_iter().map(|o| o.token_ids).collect()
}

fn check_f32(name: &str) {
    check_f32_on(name, DeviceSpec::Cpu, F32_TOL);
}

/// f32 logits on `device` within `tol` of transformers' for every case, in
/// mixed chunked batches and whole prompts, and the same greedy tokens.
fn check_f32_on(name: &str, device: DeviceSpec, tol: f32) {
    let model = LoadedModel::load(&fixtures().join(format!("models/{name}")), DType::F32).unwrap();
    let cases = load_cases(name, "generated_ids", "logits");
    let mixed = teacher_forced_max_diff(&model, device, &cases, &[1, 7, 16, 33], 16);
    let whole = teacher_forced_max_diff(&model, device, &cases, &[10_000], 32);
    println!(
        "{name} on {device}: max |Δlogit| mixed chunks {mixed:.2e}, whole prompts {whole:.2e}"
    );
    assert!(mixed <= tol, "{name}: mixed-batch logits differ by {mixed}");
    assert!(
        whole <= tol,
        "{name}: single-chunk logits differ by {whole}"
    );
    let got = greedy_tokens(&model, device, &cases);
    for (i, (g, c)) in got.iter().zip(&cases).enumerate() {
        assert_eq!(
            g, &c.generated,
            "{name} case {i}: greedy tokens differ from transformers"
        );
    }
}

#[test]
fn llama_matches_transformers() {
    check_f32("llama");
}

#[test]
fn llama_tied_matches_transformers() {
    check_f32("llama_tied");
}

#[test]
fn llama_sharded_matches_transformers() {
    check_f32("llama_sharded");
}

#[test]
fn llama_transformers_4x_config_matches() {
    check_f32("llama_v4");
}

#[test]
fn qwen2_matches_transformers() {
    check_f32("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check_f32("qwen3");
}

#[test]
fn mistral_matches_transformers() {
    check_f32("mistral");
}

#[test]
fn bf16_weights_with_f32_compute_match_transformers() {
    check_f32("qwen2_bf16");
}

/// bf16 compute against transformers' bf16: the two round differently
/// (matmul accumulation order, where rounding to bf16 happens) and bf16 keeps
/// 8 mantissa bits, so the two bf16 results differ by more than either differs
/// from f32. We hold ourselves to transformers' own bf16 error: against the f32
/// oracle our bf16 logits may be off by no more than transformers' bf16 logits
/// are (`bf16_vs_f32_logits_abs_diff.max` in the sidecar, 0.52 here), and
/// against transformers' bf16 by at most twice that. Greedy tokens may then
/// differ only where the f32 top-1 leads top-2 by less than twice that bound.
#[test]
fn bf16_compute_is_as_accurate_as_transformers_bf16() {
    check_bf16_on(DeviceSpec::Cpu);
}

fn check_bf16_on(device: DeviceSpec) {
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("oracle/qwen2_bf16.json")).unwrap(),
    )
    .unwrap();
    let hf_bf16_error = sidecar["bf16_vs_f32_logits_abs_diff"]["max"]
        .as_f64()
        .unwrap() as f32;
    let model = LoadedModel::load(&fixtures().join("models/qwen2_bf16"), DType::BF16).unwrap();
    // transformers' bf16 logits were taken over the f32 greedy tokens.
    let vs_hf_bf16 = teacher_forced_max_diff(
        &model,
        device,
        &load_cases("qwen2_bf16", "generated_ids", "logits_bf16"),
        &[1, 7, 16, 33],
        16,
    );
    let f32_cases = load_cases("qwen2_bf16", "generated_ids", "logits");
    let (vs_f32, flips) = teacher_forced(
        &model,
        device,
        &f32_cases,
        &[1, 7, 16, 33],
        16,
        2.0 * hf_bf16_error,
    );
    println!("bf16 on {device}: max |Δlogit| vs transformers bf16 {vs_hf_bf16:.3}, vs f32 {vs_f32:.3} (transformers bf16 vs f32: {hf_bf16_error:.3})");
    assert!(
        vs_f32 <= hf_bf16_error,
        "our bf16 is further from f32 ({vs_f32}) than transformers' bf16 ({hf_bf16_error})"
    );
    assert!(
        vs_hf_bf16 <= 2.0 * hf_bf16_error,
        "bf16 logits differ from transformers' bf16 by {vs_hf_bf16}"
    );
    assert_eq!(flips, 0, "bf16 changed {flips} decisive greedy choices");
}

/// f16 checkpoints load too: the llama fixture re-saved with f16 weights, run
/// in f32, stays within the error that rounding the weights to f16 causes
/// (11 mantissa bits: ~5e-4 relative per weight; 0.05 on these logits) and
/// keeps every decisive greedy choice.
#[test]
fn f16_weights_load_and_stay_close() {
    let src = fixtures().join("models/llama");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap()))
            .collect();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let model = LoadedModel::load(dir.path(), DType::F32).unwrap();
    let (worst, flips) = teacher_forced(
        &model,
        DeviceSpec::Cpu,
        &load_cases("llama", "generated_ids", "logits"),
        &[1, 7, 16, 33],
        16,
        0.1,
    );
    println!("llama with f16 weights: max |Δlogit| {worst:.4}");
    assert!(worst <= 0.05, "f16 weights moved logits by {worst}");
    assert_eq!(flips, 0);
}

/// The same oracle checks with the model on a GPU (`--device cuda`); each
/// test prints why and returns when this machine has no CUDA driver.
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;

    /// f32 on the GPU: cuBLAS and the kernels sum in another order than
    /// transformers on the CPU (split-K GEMMs, warp-tree reductions), a few
    /// ulp per sum over these 64-96-wide layers; 1e-3 leaves a margin of
    /// 10x over the CPU bound for that, and is far below any real error
    /// (a wrong head, rotation or slot moves logits by > 0.1).
    const GPU_F32_TOL: f32 = 1e-3;

    fn gpu() -> Option<DeviceSpec> {
        if !tandem_kernels::cuda::driver_available() {
            println!("skipped: no CUDA driver (libcuda.so.1) on this machine");
            return None;
        }
        Some(DeviceSpec::Cuda { ordinal: 0 })
    }

    #[test]
    fn f32_on_the_gpu_matches_transformers() {
        let Some(device) = gpu() else { return };
        for name in [
            "llama",
            "llama_tied",
            "qwen2",
            "qwen3",
            "mistral",
            "qwen2_bf16",
        ] {
            check_f32_on(name, device, GPU_F32_TOL);
        }
    }

    #[test]
    fn bf16_on_the_gpu_is_as_accurate_as_transformers_bf16() {
        let Some(device) = gpu() else { return };
        check_bf16_on(device);
    }
}
