//! Every CUDA kernel source compiles with NVRTC for sm_90 (Hopper) with no
//! warnings, and defines every entry point the launch wrappers look up. No
//! GPU needed: NVRTC and ptxas (inside NVRTC for an `sm_XX` target) run on
//! the CPU. The `sm_90` target produces the `compute_90` PTX the runtime
//! path loads, then assembles it, so ptxas's register and spill report is
//! printed too (`cargo nextest run --no-capture` or `cargo test -- --nocapture`).
//!
//! In CI (`CI` set) a missing libnvrtc or CUDA headers fails the test;
//! elsewhere it is skipped with the reason. `TANDEM_CUDA_WHEELS=1 source
//! scripts/python_env.sh` installs both from wheels into .venv and exports
//! what this test needs (scripts/test.sh does).
#![cfg(feature = "cuda")]

use tandem_kernels::cuda::{
    compile, cuda_include_dir, nvrtc_available, nvrtc_version, Compiled, SOURCES,
};

const ARCH: &str = "sm_90";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Fails in CI, skips elsewhere; either way says why.
fn unavailable(reason: &str) {
    if in_ci() {
        panic!("CI must compile the CUDA kernels, but: {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// ptxas's `-v` report as one line per kernel: registers, spills, stack.
fn ptxas_summary(c: &Compiled) -> Vec<String> {
    let mut lines = Vec::new();
    let mut kernel = String::new();
    let mut frame = String::new();
    for line in c.log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            kernel = rest.split('\'').next().unwrap_or_default().to_string();
        } else if line.contains("bytes stack frame") {
            frame = line
                .trim_start_matches("ptxas")
                .trim_matches(|c: char| c == ' ' || c == '.')
                .to_string();
        } else if let Some(used) = line
            .split("info    : ")
            .nth(1)
            .filter(|u| u.starts_with("Used"))
        {
            lines.push(format!("{kernel}: {used}; {frame}"));
        }
    }
    lines
}

#[test]
fn every_kernel_source_compiles_for_sm_90_without_warnings() {
    if !nvrtc_available() {
        unavailable(
            "libnvrtc was not found (put the nvidia-cuda-nvrtc-cu12 wheel's lib directory, \
             $TANDEM_NVRTC_LIB_DIR after `TANDEM_CUDA_WHEELS=1 source scripts/python_env.sh`, on \
             LD_LIBRARY_PATH)",
        );
        return;
    }
    let include = match cuda_include_dir() {
        Ok(dir) => dir,
        Err(e) => {
            unavailable(&e.to_string());
            return;
        }
    };
    let (major, minor) = nvrtc_version().expect("NVRTC loaded");
    eprintln!(
        "NVRTC {major}.{minor}, CUDA headers from {}",
        include.display()
    );

    let mut failures = Vec::new();
    for source in SOURCES {
        let started = std::time::Instant::now();
        let compiled = match compile(source, ARCH, &include, &["-Xptxas=-v"]) {
            Ok(c) => c,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let warnings = compiled.warnings();
        if !warnings.is_empty() {
            failures.push(format!(
                "{}: warnings:\n{}",
                source.name,
                warnings.join("\n")
            ));
        }
        for entry in source.entry_points() {
            if !compiled.ptx.contains(&format!(".entry {entry}(")) {
                failures.push(format!(
                    "{}: no entry point {entry} in the PTX",
                    source.name
                ));
            }
        }
        eprintln!(
            "{}: {} entry points, {} bytes of PTX, {:.1} s",
            source.name,
            source.entry_points().len(),
            compiled.ptx.len(),
            started.elapsed().as_secs_f64()
        );
        for line in ptxas_summary(&compiled) {
            eprintln!("  {line}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
