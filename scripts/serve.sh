#!/usr/bin/env bash
# The main job: build tandem, write the local demo model (random weights, no
# network) and run it. Until the OpenAI server lands this runs a batch of
# prompts through the paged engine with `tandem generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
cargo build --bin tandem
tandem=target/debug/tandem
[ -n "${CARGO_TARGET_DIR:-}" ] && tandem="$CARGO_TARGET_DIR/debug/tandem"
model=demo-models/small
"$tandem" demo-model --size small --out "$model"
"$tandem" generate --model "$model" --max-tokens 48 --ignore-eos \
    --prompt "The paged KV cache keeps every layer of a block together, so" \
    --prompt "Prefill and decode run in separate workers because" \
    --prompt "你好，世界"
