//! The `tandem` binary end to end: write the tiny demo model, then generate
//! from it as a script would (`--json`).

use std::path::Path;
use std::process::{Command, Output};

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tandem")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "tandem failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn demo(dir: &Path) {
    let stdout = ok(tandem(&[
        "demo-model",
        "--size",
        "tiny",
        "--out",
        dir.to_str().unwrap(),
    ]));
    assert!(
        stdout.contains("RANDOM"),
        "demo-model must say the weights are random: {stdout}"
    );
}

fn generate_json(model: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "--max-tokens",
        "12",
    ];
    args.extend_from_slice(extra);
    ok(tandem(&args))
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn demo_model_then_generate_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    demo(&model);
    let prompts = ["Hello there", "The cache", "你好"];
    let args: Vec<&str> = prompts
        .iter()
        .flat_map(|p| ["--prompt", *p])
        .chain(["--ignore-eos"])
        .collect();
    let lines = generate_json(&model, &args);
    assert_eq!(lines.len(), prompts.len());
    for (line, prompt) in lines.iter().zip(prompts) {
        assert_eq!(line["prompt"], prompt);
        assert_eq!(line["token_ids"].as_array().unwrap().len(), 12);
        assert_eq!(line["finish_reason"], "length");
        assert!(line["text"].is_string());
    }
    // Greedy decoding is deterministic, and a prompt's tokens don't depend on
    // what else shares its batch.
    let alone = generate_json(&model, &["--prompt", "The cache", "--ignore-eos"]);
    assert_eq!(alone[0]["token_ids"], lines[1]["token_ids"]);
}

#[test]
fn prompts_file_and_seeded_sampling_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    demo(&model);
    let file = dir.path().join("prompts.txt");
    std::fs::write(&file, "first prompt\n\nsecond prompt\n").unwrap();
    let args = [
        "--prompts-file",
        file.to_str().unwrap(),
        "--temperature",
        "0.8",
        "--seed",
        "7",
        "--ignore-eos",
    ];
    let a = generate_json(&model, &args);
    let b = generate_json(&model, &args);
    assert_eq!(a.len(), 2, "blank lines are skipped");
    assert_eq!(a, b, "same seed, same tokens");
}

#[test]
fn missing_model_fails_with_a_hint() {
    let out = tandem(&["generate", "--model", "/nonexistent/dir", "--prompt", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("demo-model"), "{err}");
}

#[test]
fn check_config_validates_flags_without_starting() {
    for args in [
        &[
            "worker",
            "--role",
            "prefill",
            "--model",
            "/models/m",
            "--host",
            "0.0.0.0",
        ][..],
        &[
            "worker",
            "--role",
            "decode",
            "--model",
            "/models/m",
            "--kv-lease-timeout",
            "5",
        ],
        &[
            "router",
            "--model",
            "/m",
            "--prefill",
            "http://p:8000",
            "--decode",
            "http://d:8000",
        ],
        &["serve", "--prefill-workers", "2", "--decode-workers", "1"],
        &[
            "serve",
            "--colocated",
            "--workers",
            "2",
            "--routing",
            "round-robin",
        ],
    ] {
        let mut a = args.to_vec();
        a.push("--check-config");
        let out = tandem(&a);
        assert!(
            out.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    }
    for (args, complaint) in [
        (
            &["router", "--model", "/m", "--prefill", "http://p:1"][..],
            "--decode",
        ),
        (&["router", "--model", "/m", "--decode", "p:1"], "http://"),
        (
            &["worker", "--role", "prefill", "--kv-lease-timeout", "0"],
            "--kv-lease-timeout",
        ),
        (
            &["worker", "--role", "both", "--device", "tpu"],
            "use cpu, cuda or cuda:N",
        ),
        (
            &["serve", "--gpu-memory-utilization", "1.5"],
            "not a fraction in (0, 1]",
        ),
    ] {
        let mut a = args.to_vec();
        a.push("--check-config");
        let out = tandem(&a);
        assert!(!out.status.success(), "{a:?} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(complaint), "{a:?}: {err}");
    }
}

/// `--device cuda` where it cannot work says why: a binary built without
/// the `cuda` feature names the feature and the rebuild; one built with it,
/// on a machine without an NVIDIA driver, names the missing driver.
#[test]
fn cuda_device_without_a_gpu_names_the_cause() {
    let libcuda_present = [
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib64/libcuda.so.1",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if libcuda_present {
        println!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    demo(&model);
    let out = tandem(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "x",
        "--device",
        "cuda:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let cause = if cfg!(feature = "cuda") {
        "the CUDA driver (libcuda.so.1) was not found"
    } else {
        "needs the `cuda` feature"
    };
    assert!(
        err.contains("--device cuda:0") && err.contains(cause),
        "{err}"
    );
}
