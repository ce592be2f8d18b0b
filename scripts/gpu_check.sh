#!/usr/bin/env bash
# The one script to run on a lent GPU machine (docs/gpu.md, "Checking on a
# GPU"); it needs gpu-bundle/bundle.tar.xz from scripts/gpu_bundle.sh, made
# here and carried there. Sized for under 8 minutes on an H200. Every check
# runs even when an earlier one failed; results go to $OUT (at most 8
# files): summary.md (the figures), tests.log, steps.log, serve-*.json.
# Exit status: 0 only if every check passed.
#
#   1. the GPU tests: every kernel against the CPU path, the runner against
#      the committed transformers fixtures (f32 and bf16);
#   2. greedy tokens of `tandem generate --device cuda` against transformers
#      on the same GPU, for the tiny fixture models and a Qwen2.5-0.5B-shaped
#      random model, in f32 (must be identical) and bf16 (reported);
#   3. decode tok/s at batch 1, 32 and 128 against the HBM floor (weight
#      bytes / device copy bandwidth, measured in this run), prefill tok/s at
#      2k and 8k prompts against the bf16 matrix peak (measured in this run);
#   4. `tandem-bench serve` at 32 and 128 streams against
#      `tandem serve --device cuda --colocated`.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
W="$(mktemp -d)"
LOG="$OUT/steps.log"
FAILED=()
step() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
fail() { FAILED+=("$1"); echo "FAILED: $1" | tee -a "$LOG"; }

step "unpacking the bundle"
tar -C "$W" -xJf gpu-bundle/bundle.tar.xz || { echo "no gpu-bundle/bundle.tar.xz: run scripts/gpu_bundle.sh here first" >&2; exit 2; }
BIN="$W/bin"
# The test binaries read fixtures from the checkout they were built in.
BUILT_AT="$(cat "$W/built_at")"
if [ "$BUILT_AT" != "$REPO" ] && [ ! -e "$BUILT_AT" ]; then
    mkdir -p "$(dirname "$BUILT_AT")" && ln -s "$REPO" "$BUILT_AT"
fi

# NVRTC, cuBLAS and the CUDA headers from this machine's toolkit or its
# Python wheels. tandem's cudarc looks for libnvrtc.so / libcublas.so (or
# the .12 names): link whatever major version is installed under those.
SHIM="$W/shim"
mkdir -p "$SHIM"
find_lib() {
    { ldconfig -p 2>/dev/null | awk -v n="$1" '$1 ~ "^"n {print $NF}'
      find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /opt/torch/.venv /usr/lib/python3* /usr/local/lib/python3* \
          -name "$1*" 2>/dev/null; } | grep -v stub | head -1
}
for name in libnvrtc.so libcublas.so libcublasLt.so; do
    lib="$(find_lib "$name")"
    if [ -n "$lib" ]; then
        ln -sf "$lib" "$SHIM/$name"
        ln -sf "$lib" "$SHIM/$name.12"
        # libnvrtc loads its builtins library from beside itself.
        for dep in "$(dirname "$lib")"/libnvrtc-builtins.so*; do [ -e "$dep" ] && ln -sf "$dep" "$SHIM/"; done
    else
        fail "no $name on this machine"
    fi
done
export LD_LIBRARY_PATH="$W/lib:$SHIM${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for inc in /usr/local/cuda/include /usr/local/cuda/targets/x86_64-linux/include \
    $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cuda_runtime", "include") for p in nvidia.__path__))' 2>/dev/null); do
    if [ -f "$inc/cuda_bf16.h" ]; then export TANDEM_CUDA_INCLUDE="$inc"; break; fi
done
export TANDEM_KERNEL_CACHE="$W/kernel-cache"
export RUST_LOG=warn
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; echo "TANDEM_CUDA_INCLUDE=${TANDEM_CUDA_INCLUDE:-none}"; ls -l "$SHIM"; } >> "$LOG" 2>&1
DEVICE_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"

step "1. GPU tests"
for t in cuda_compile cuda_ops cuda_attention; do
    timeout 150 "$W/tests/$t" --test-threads 4 >> "$OUT/tests.log" 2>&1 || fail "test binary $t"
done
timeout 150 "$W/tests/parity" --test-threads 2 --nocapture cuda:: >> "$OUT/tests.log" 2>&1 || fail "runner parity (tests/parity cuda::)"
if grep -q "skipped:" "$OUT/tests.log"; then fail "a GPU test skipped on a GPU machine"; fi

step "2. greedy tokens against transformers on this GPU"
Q05="$W/qwen25-05b"
timeout 120 python3 scripts/gpu_oracle.py make-model "$Q05" >> "$LOG" 2>&1 || fail "making the Qwen2.5-0.5B-shaped model"
python3 - "$W" <<'EOF'
import json, random, sys
random.seed(0)
w = sys.argv[1]
for name, vocab in [("tiny", 384), ("q05", 151936)]:
    with open(f"{w}/prompts-{name}.jsonl", "w") as f:
        for n in (1, 7, 33, 70):
            f.write(json.dumps([random.randrange(vocab) for _ in range(n)]) + "\n")
EOF
GREEDY_SUMMARY="$W/greedy.jsonl"
: > "$GREEDY_SUMMARY"
for spec in llama:tiny qwen2:tiny qwen3:tiny mistral:tiny "$Q05":q05; do
    model="${spec%%:*}"; prompts="$W/prompts-${spec##*:}.jsonl"
    case "$model" in /*) dir="$model"; label=qwen25-05b ;; *) dir="$REPO/tests/fixtures/models/$model"; label="$model" ;; esac
    for dtype in f32 bf16; do
        theirs="$W/hf-$label-$dtype.jsonl"; ours="$W/tandem-$label-$dtype.jsonl"
        timeout 120 python3 scripts/gpu_oracle.py greedy --model "$dir" --dtype "$dtype" --prompts "$prompts" \
            --max-new-tokens 32 --out "$theirs" >> "$LOG" 2>&1 || { fail "transformers greedy $label $dtype"; continue; }
        timeout 120 "$BIN/tandem" generate --model "$dir" --device cuda --dtype "$dtype" --prompt-ids-file "$prompts" \
            --max-tokens 32 --ignore-eos --json > "$ours" 2>> "$LOG" || { fail "tandem generate --device cuda $label $dtype"; continue; }
        require=""; [ "$dtype" = f32 ] && require=--require-equal
        result="$(python3 scripts/gpu_oracle.py compare --theirs "$theirs" --ours "$ours" $require)" || fail "greedy tokens differ: $label $dtype"
        echo "{\"model\": \"$label\", \"dtype\": \"$dtype\", \"result\": $result}" >> "$GREEDY_SUMMARY"
    done
done

step "3. speed against the physical ceilings"
ROOF="$(timeout 60 python3 scripts/gpu_oracle.py roofline 2>> "$LOG")" || fail "measuring the roofline"
echo "$ROOF" >> "$LOG"
SPEED="$W/speed.jsonl"
: > "$SPEED"
ids_file() {  # COUNT LEN -> a prompt-ids file of COUNT prompts of LEN random ids
    python3 -c "import json,random,sys; random.seed(1); n,l=int(sys.argv[1]),int(sys.argv[2]); print('\n'.join(json.dumps([random.randrange(151935) for _ in range(l)]) for _ in range(n)))" "$1" "$2"
}
measure() {  # LABEL PROMPTS PROMPT_LEN MAX_TOKENS
    ids_file "$2" "$3" > "$W/speed-prompts.jsonl"
    if timeout 120 "$BIN/tandem" generate --model "$Q05" --device cuda --dtype bf16 --prompt-ids-file "$W/speed-prompts.jsonl" \
        --max-tokens "$4" --ignore-eos --json --max-num-seqs 128 --max-num-batched-tokens 8192 > /dev/null 2> "$W/speed.err"; then
        python3 - "$1" "$W/speed.err" >> "$SPEED" <<'EOF'
import json, re, sys
line = [l for l in open(sys.argv[2]) if "prefill" in l and "decode" in l][-1]
p = re.search(r"prefill ([\d.]+)s \(([\d.]+) tok/s\)", line)
d = re.search(r"decode ([\d.]+)s \(([\d.]+) tok/s\)", line)
print(json.dumps({"label": sys.argv[1], "prefill_tok_s": float(p.group(2)), "decode_tok_s": float(d.group(2))}))
EOF
    else
        fail "speed run $1"; cat "$W/speed.err" >> "$LOG"
    fi
}
measure warmup 1 32 8
for b in 1 32 128; do measure "decode-batch-$b" "$b" 32 128; done
measure prefill-2k 1 2048 1
measure prefill-8k 1 8192 1

step "4. serving benchmark"
PORT=18123
"$BIN/tandem" serve --model "$Q05" --device cuda --dtype bf16 --colocated --port "$PORT" \
    --served-model-name q05 > "$W/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 1; done
for streams in 32 128; do
    timeout 150 "$BIN/tandem-bench" serve --base-url "http://127.0.0.1:$PORT" --model q05 \
        --tokenizer "$Q05/tokenizer.json" --num-prompts $((streams * 2)) --max-concurrency "$streams" \
        --input-len 256 --output-len 128 --ignore-eos --save-result "$OUT/serve-$streams.json" >> "$LOG" 2>&1 \
        || fail "tandem-bench serve at $streams streams"
done
kill "$SERVE_PID" 2>/dev/null; wait "$SERVE_PID" 2>/dev/null
tail -20 "$W/serve.log" >> "$LOG"

step "summary"
python3 - "$OUT/summary.md" "$DEVICE_NAME" "$ROOF" "$GREEDY_SUMMARY" "$SPEED" "$OUT" "${#FAILED[@]}" <<'EOF'
import glob, json, os, sys
out, device, roof, greedy, speed, outdir, nfailed = sys.argv[1:8]
roof = json.loads(roof) if roof.strip() else {}
weight_bytes = 494_032_768 * 2  # Qwen2.5-0.5B-shaped, bf16
lines = [f"# gpu_check on {device}", ""]
if roof:
    bw, peak = roof["copy_bytes_per_s"], roof["bf16_flop_per_s"]
    lines += [f"Measured in this run: device copy {bw/1e12:.2f} TB/s (read + write), bf16 matrix peak {peak/1e12:.0f} TFLOP/s.", ""]
lines += ["## Greedy tokens against transformers on the same GPU", "", "| model | dtype | identical / prompts | first token equal | common prefix lengths (of 32) |", "|---|---|---|---|---|"]
for l in open(greedy):
    g = json.loads(l); r = g["result"]
    lines.append(f"| {g['model']} | {g['dtype']} | {r.get('identical')} / {r.get('prompts')} | {r.get('first_token_equal')} | {r.get('common_prefix_lengths')} |")
lines += ["", "## Speed (Qwen2.5-0.5B-shaped, bf16)", "", "| run | tok/s | ceiling | share |", "|---|---|---|---|"]
for l in open(speed):
    s = json.loads(l)
    if s["label"].startswith("decode-batch-") and roof:
        b = int(s["label"].rsplit("-", 1)[1])
        floor = b * bw / weight_bytes  # every step reads every weight once
        lines.append(f"| decode, batch {b} | {s['decode_tok_s']:.0f} | {floor:.0f} (HBM floor) | {s['decode_tok_s']/floor:.0%} |")
    elif s["label"].startswith("prefill") and roof:
        flops = 2 * 494_032_768  # per prompt token, attention left out
        ceiling = peak / flops
        lines.append(f"| {s['label']} | {s['prefill_tok_s']:.0f} | {ceiling:.0f} (bf16 peak) | {s['prefill_tok_s']/ceiling:.0%} |")
lines += ["", "## Serving (tandem-bench serve, in 256 / out 128)", ""]
for f in sorted(glob.glob(os.path.join(outdir, "serve-*.json"))):
    lines.append(f"- {os.path.basename(f)}: " + open(f).read()[:600].replace("\n", " "))
lines += ["", f"Failed checks: {nfailed} (see steps.log)"]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
if [ "${#FAILED[@]}" -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "gpu_check: every check passed"
