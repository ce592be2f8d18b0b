#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every Rust test
# (one cargo profile, built once), then the OpenAI-client suite (pytest with
# the official `openai` package) against a real `tandem serve` process.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# Before the Rust tests: they load the default embedding model from .venv;
# TANDEM_CUDA_WHEELS=1 adds NVRTC and the CUDA headers for the CUDA check below.
TANDEM_CUDA_WHEELS=1 source scripts/python_env.sh
cargo fmt --all -- --check
# Licenses and sources of every crate (offline); advisories where a tool
# and the RustSec database are at hand, else a printed reason.
python3 scripts/check_deps.py
# The default build is CPU-only and must stay clean without any CUDA code.
cargo clippy --workspace --all-targets -- -D warnings

# Everything else builds once, with the `cuda` features on: they build
# without a CUDA toolkit or GPU (cudarc loads libcuda, libnvrtc and
# libcublas at run time). The kernels' tests compile every CUDA kernel for
# sm_90 with NVRTC from the wheels (CI=true makes a missing NVRTC an
# error); the GPU tests print why they skip and return.
CUDA_FEATURES=tandem-server/cuda,tandem-bench/cuda,tandem-kernels/cuda,tandem-transport/cuda
cargo clippy --workspace --all-targets --features "$CUDA_FEATURES" -- -D warnings
LD_LIBRARY_PATH="$TANDEM_NVRTC_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    cargo nextest run --workspace --features "$CUDA_FEATURES" --no-fail-fast
# The libFuzzer targets (fuzz/, scripts/fuzz.sh) need a nightly toolchain and
# minutes each, so this suite runs their proptest stand-ins over the same
# entry points instead (the nextest tests named `fuzz`).
echo "cargo fuzz: skipped here (nightly toolchain, minutes per target: run scripts/fuzz.sh); its proptest stand-ins over the same entry points ran in nextest above"

# The Python suite starts the tandem binary nextest built for the server's
# integration tests (with the cuda feature; it runs on the CPU by default):
# the same build, nothing compiled twice (a separate
# `cargo build` would resolve features without dev-dependencies and rebuild).
export TANDEM_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/tandem"
if [ ! -x "$TANDEM_BIN" ]; then
    echo "error: $TANDEM_BIN was not built by the test run" >&2
    exit 1
fi
set +e
timeout 300 .venv/bin/python -m pytest tests/python -q -p no:cacheprovider --durations=5
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests from tests/python" >&2
    exit 1
fi
exit "$rc"
