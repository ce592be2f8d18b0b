#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test
# (one cargo profile, built once).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo nextest run --workspace --no-fail-fast
