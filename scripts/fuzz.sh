#!/usr/bin/env bash
# libFuzzer runs of the server's cargo-fuzz targets (fuzz/; the properties
# are in server/src/fuzzing.rs):
#
#   scripts/fuzz.sh [seconds] [target...]
#
# Each target (default: all five, one after the other) runs `seconds`
# (default 30) from its committed seeds (fuzz/seeds/<target>) plus the
# corpus earlier runs kept (fuzz/corpus/<target>, not committed), with the
# JSON dictionary fuzz/json.dict. A crash stops that target's run and is
# saved under fuzz/artifacts/<target>/; the log of each run is
# fuzz/artifacts/<target>/last-run.log. Prints per target: executions,
# exec/s, corpus size, coverage (cov/ft of libFuzzer's last line), crashes;
# exits 1 if any target crashed.
#
# Needs cargo-fuzz and a nightly toolchain (`cargo +nightly`), or a stable
# one that accepts RUSTC_BOOTSTRAP=1; without them it says why and exits 0
# (CI runs the proptest stand-ins instead: server/src/api/tests/fuzz.rs and
# server/src/worker/fuzz_tests.rs). Not part of scripts/test.sh.
#
# The build goes to fuzz/target (its own workspace: the main target/ is not
# touched). CARGO_WRAPPER, if set, prefixes the build command (e.g. a flock
# wrapper that serialises builds). Each run is then what
# `cargo fuzz run <target> --fuzz-dir fuzz <corpus> <seeds> -- <flags>` runs,
# the built binary itself: `cargo fuzz run` would rebuild, outside the
# wrapper, whatever changed since the build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ALL=(openai_request chat_template worker_body rag_request persisted_index)

secs=${1:-30}
if [ $# -gt 0 ]; then shift; fi
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${ALL[@]}"); fi

skip() {
    echo "fuzz.sh: skipped: $1 (the proptest stand-ins still run in scripts/test.sh)"
    exit 0
}

# Which toolchain: nightly through rustup, else stable unlocked.
if ! cargo fuzz --version >/dev/null 2>&1; then
    skip "cargo-fuzz is not installed (cargo install cargo-fuzz)"
fi
if cargo +nightly --version >/dev/null 2>&1; then
    toolchain=(+nightly)
elif RUSTC_BOOTSTRAP=1 rustc -Zhelp >/dev/null 2>&1; then
    export RUSTC_BOOTSTRAP=1
    toolchain=()
else
    skip "no nightly toolchain, and this rustc refuses RUSTC_BOOTSTRAP=1"
fi

# The temporary RAG storage of the targets: removed after each run.
scratch_root=$(mktemp -d "${TMPDIR:-/tmp}/tandem-fuzz.XXXXXX")
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    rm -rf "$scratch_root"
    scratch_root=$(mktemp -d /dev/shm/tandem-fuzz.XXXXXX)
fi
trap 'rm -rf "$scratch_root"' EXIT

# cargo fuzz's defaults: release with debug assertions, AddressSanitizer,
# for the host.
host=$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')
bin_dir=$ROOT/fuzz/target/$host/release
for t in "${targets[@]}"; do
    ${CARGO_WRAPPER:-} cargo "${toolchain[@]}" fuzz build "$t" \
        --fuzz-dir "$ROOT/fuzz" --target-dir "$ROOT/fuzz/target" --target "$host"
done

# Field `name` of libFuzzer's -print_final_stats output, or "?".
final_stat() { grep -m1 "^stat::$1:" "$2" | awk '{print $2}' || true; }

# "cov: A ft: B corp: C/D" from the last status line, as separate words.
last_status() {
    grep -E '^#[0-9]+' "$1" | tail -1 |
        sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)\/([0-9a-zA-Z]+).*/\1 \2 \3 \4/'
}

crashed=0
summary=()
for t in "${targets[@]}"; do
    corpus=$ROOT/fuzz/corpus/$t
    artifacts=$ROOT/fuzz/artifacts/$t
    log=$artifacts/last-run.log
    mkdir -p "$corpus" "$artifacts"
    stamp=$(mktemp)
    echo "fuzz.sh: $t for ${secs}s"
    run=("$bin_dir/$t" -artifact_prefix="$artifacts/" -max_total_time="$secs" -timeout=30
        -print_final_stats=1 -dict="$ROOT/fuzz/json.dict" "$corpus" "$ROOT/fuzz/seeds/$t")
    echo "${run[*]}" >"$log"
    set +e
    TANDEM_FUZZ_TMP="$scratch_root/$t" "${run[@]}" >>"$log" 2>&1
    rc=$?
    set -e
    rm -rf "${scratch_root:?}/$t"
    crashes=$(find "$artifacts" -newer "$stamp" -type f \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
    rm -f "$stamp"
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="? (exit $rc, see $log)"
    fi
    [ "$rc" -eq 0 ] || crashed=1
    read -r cov ft corp corp_bytes _ <<<"$(last_status "$log") ? ? ? ?"
    line=$(printf '%-16s execs %-10s exec/s %-6s corpus %s (%s) cov %s ft %s crashes %s' \
        "$t" "$(final_stat number_of_executed_units "$log")" "$(final_stat average_exec_per_sec "$log")" \
        "$corp" "$corp_bytes" "$cov" "$ft" "$crashes")
    echo "$line"
    summary+=("$line")
    grep -E '^(==[0-9]+==|SUMMARY|thread .* panicked)' "$log" | head -5 || true
done

echo "fuzz.sh: ${secs}s per target"
printf '%s\n' "${summary[@]}"
exit "$crashed"
