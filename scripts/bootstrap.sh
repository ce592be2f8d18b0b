#!/usr/bin/env bash
# Installs what building and testing tandem needs, idempotently: safe to run
# on every invocation, quick when everything is already there.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
        [ -x "$d/cargo" ] && export PATH="$d:$PATH"
    done
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found. tandem needs a Rust toolchain >= 1.85 (rustup); install it and re-run." >&2
    exit 1
fi

# C toolchain for crates that build C (onig, ...).
if ! command -v cc >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq build-essential pkg-config >/dev/null
fi

# UCX (tandem-transport binds the system libucp through bindgen, which
# needs libclang) and ucx_perftest for the transfer benchmark.
if ! pkg-config --exists ucx 2>/dev/null || ! command -v ucx_perftest >/dev/null 2>&1 \
    || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq libucx-dev ucx-utils libclang-dev pkg-config >/dev/null
fi

# Python with venv + pip for the OpenAI-client test suite.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest from crates.io ..." >&2
    cargo install --locked cargo-nextest
fi
