#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every Rust test
# (one cargo profile, built once), then the OpenAI-client suite (pytest with
# the official `openai` package) against a real `tandem serve` process.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo nextest run --workspace --no-fail-fast

# The Python suite starts target/debug/tandem (built above; built again here
# only if nextest did not need it).
cargo build --bin tandem
export TANDEM_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/tandem"
source scripts/python_env.sh
set +e
timeout 300 .venv/bin/python -m pytest tests/python -q -p no:cacheprovider --durations=5
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests from tests/python" >&2
    exit 1
fi
exit "$rc"
