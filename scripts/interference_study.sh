#!/usr/bin/env bash
# Interference study (issue 8, item 5): short chat requests mixed with
# long-prompt requests at rising request rates, against
#   pd:        tandem serve --prefill-workers 1 --decode-workers 1
#   colocated: tandem serve --colocated --workers 2 --routing round-robin
# on the same machine. Writes one JSON line per (setup, rate) to
# $OUT/interference.jsonl, plots p99 TTFT and TPOT vs rate to
# $OUT/interference.png (all requests) and $OUT/interference-short.png
# (short requests only), and prints p99 P/D ÷ colocated per rate.
#
# A setup whose flags this `tandem` lacks is skipped with a message (the
# colocated one falls back to a single `both` worker, labelled colocated-1w).
#
# Knobs (environment): MODEL (default: demo-models/small, written if
# missing), RATES (req/s, comma list), NUM_PROMPTS (per rate), SHORT_LEN,
# LONG_LEN, LONG_FRACTION, OUTPUT_LEN, OUT, SERVE_ARGS, TANDEM, BENCH
# (binaries; default target/release if built there, else target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
pick() { if [ -x "$target/release/$1" ]; then echo "$target/release/$1"; else echo "$target/debug/$1"; fi; }
TANDEM="${TANDEM:-$(pick tandem)}"
BENCH="${BENCH:-$(pick tandem-bench)}"
MODEL="${MODEL:-demo-models/small}"
RATES="${RATES:-0.25,0.5,1,2}"
NUM_PROMPTS="${NUM_PROMPTS:-40}"
SHORT_LEN="${SHORT_LEN:-64}"
LONG_LEN="${LONG_LEN:-1024}"
LONG_FRACTION="${LONG_FRACTION:-0.25}"
OUTPUT_LEN="${OUTPUT_LEN:-32}"
OUT="${OUT:-bench-results/interference}"
# Passed to every `tandem serve` (each of the two engines gets this KV cache).
SERVE_ARGS="${SERVE_ARGS:---kv-cache-memory 1GiB}"

for bin in "$TANDEM" "$BENCH"; do
  [ -x "$bin" ] || { echo "missing $bin: run 'cargo build --release --bin tandem --bin tandem-bench' (or set TANDEM/BENCH)" >&2; exit 1; }
done
[ -f "$MODEL/config.json" ] || "$TANDEM" demo-model --size small --out "$MODEL"
mkdir -p "$OUT"
results="$OUT/interference.jsonl"
: > "$results"

server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

# start_server LOG ARGS...: start `tandem serve` on a free port, wait until
# /health answers, and set $base_url.
start_server() {
  local log="$1"; shift
  # shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
  "$TANDEM" serve --model "$MODEL" --host 127.0.0.1 --port 0 $SERVE_ARGS "$@" > "$log" 2>&1 &
  server_pid=$!
  base_url=""
  for _ in $(seq 600); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "server exited; its log ($log):" >&2; tail -20 "$log" >&2; return 1
    fi
    base_url="$(grep -oE 'http://127\.0\.0\.1:[0-9]+' "$log" | head -1 || true)"
    if [ -n "$base_url" ] && curl -sf "$base_url/health" > /dev/null; then
      return 0
    fi
    sleep 0.5
  done
  echo "server did not become healthy in 300 s ($log)" >&2
  return 1
}

run_setup() {
  local label="$1"; shift
  echo "== $label: tandem serve $*"
  start_server "$OUT/server-$label.log" "$@"
  "$BENCH" sweep --base-url "$base_url" --model "$MODEL" --tokenizer "$MODEL" \
    --endpoint chat --dataset mixed --num-prompts "$NUM_PROMPTS" \
    --input-len "$SHORT_LEN" --long-input-len "$LONG_LEN" --long-fraction "$LONG_FRACTION" \
    --output-len "$OUTPUT_LEN" --ignore-eos --percentiles 50,90,99 --no-progress \
    --rates "$RATES" --label "$label" --out "$results"
  stop_server
}

help="$("$TANDEM" serve --help)"
if grep -qE -- '(^|[[:space:]])--workers' <<< "$help" && grep -q -- '--routing' <<< "$help"; then
  run_setup colocated --colocated --workers 2 --routing round-robin
else
  echo "note: this tandem has no --workers/--routing; baseline is ONE colocated worker" >&2
  run_setup colocated-1w --colocated
fi
if grep -q -- '--prefill-workers' <<< "$help"; then
  run_setup pd --prefill-workers 1 --decode-workers 1
else
  echo "note: this tandem has no --prefill-workers: P/D not measured" >&2
fi

ratio=()
if grep -q '"label":"pd"' "$results" && grep -q '"label":"colocated"' "$results"; then
  ratio=(--ratio pd/colocated)
fi
echo "== all requests"
"$BENCH" plot "$results" --out "$OUT/interference.png" --stats p99 \
  --title "short + long prompts: p99 vs rate (all requests)" "${ratio[@]}"
echo "== short requests only (the ones long prefills interfere with)"
"$BENCH" plot "$results" --out "$OUT/interference-short.png" --stats p99 --class short \
  --title "short + long prompts: p99 vs rate (short requests)" "${ratio[@]}"
