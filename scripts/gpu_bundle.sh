#!/usr/bin/env bash
# Builds here what scripts/gpu_check.sh runs on a lent GPU machine, which
# has no Rust toolchain, no UCX and no network: the release `tandem` and
# `tandem-bench` with the `cuda` features, the GPU test binaries, and the
# shared libraries they link that such a machine lacks (UCX), stripped and
# packed as gpu-bundle/bundle.tar.xz (gpu-bundle/ is git-ignored; name it in
# the device call's `carry`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
FEATURES=tandem-server/cuda,tandem-bench/cuda
TEST_FEATURES=$FEATURES,tandem-kernels/cuda,tandem-transport/cuda
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/tests" "$STAGE/lib" gpu-bundle

cargo build --release -p tandem-server -p tandem-bench --features "$FEATURES"
cp "$TARGET/release/tandem" "$TARGET/release/tandem-bench" "$STAGE/bin/"

# The test binaries of the same dev build scripts/test.sh makes (the
# GPU tests skip here and run there). Each binary reads its fixtures from
# the path it was built at; gpu_check.sh links that path to the checkout.
cargo test --workspace --features "$TEST_FEATURES" --no-run --message-format=json-render-diagnostics \
    | python3 -c '
import json, sys
wanted = {"cuda_ops", "cuda_attention", "cuda_compile", "parity"}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] in wanted and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do cp "$exe" "$STAGE/tests/$name"; done
for t in cuda_ops cuda_attention cuda_compile parity; do
    [ -x "$STAGE/tests/$t" ] || { echo "error: test binary $t was not built" >&2; exit 1; }
done
echo "$(pwd)" > "$STAGE/built_at"

# Libraries outside glibc and the C++ runtime (UCX and what it needs).
ldd "$STAGE/bin/tandem" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
        *) cp -L "$lib" "$STAGE/lib/" ;;
    esac
done
strip "$STAGE"/bin/* "$STAGE"/tests/*
tar -C "$STAGE" -cJf gpu-bundle/bundle.tar.xz .
ls -l gpu-bundle/bundle.tar.xz
