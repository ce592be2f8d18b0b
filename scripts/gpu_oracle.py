#!/usr/bin/env python3
"""The transformers side of scripts/gpu_check.sh, run on the lent GPU machine
(PyTorch and transformers are on its image; nothing here runs in CI).

Subcommands:

* ``make-model DIR`` -- a Qwen2.5-0.5B-shaped model with random weights
  (hidden 896, 24 layers, 14 / 2 heads, intermediate 4,864, vocab 151,936,
  tied embeddings; seed 0), saved in bf16 with a word-level tokenizer whose
  token i is ``<i>``, so tandem and transformers load the same directory and
  prompts go in as token ids.
* ``greedy --model DIR --dtype bf16|f32 --prompts FILE --max-new-tokens N
  --out FILE`` -- transformers on the GPU: for every prompt (one JSON array
  of token ids per line) the greedy continuation of exactly N tokens (EOS
  ignored), and the prompt's last-position logits' top 5; one JSON object
  per line.
* ``compare --theirs FILE --ours FILE [--require-equal]`` -- tandem's
  ``generate --json`` output against ``greedy``'s: per prompt the length of
  the common prefix of the two token lists; prints a JSON summary, and with
  ``--require-equal`` exits 1 unless every list is identical.
* ``roofline`` -- the physical ceilings of this GPU measured now: device-to-
  device copy bandwidth (bytes read + written per second) and dense bf16
  matrix throughput (8192^3 products); one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def make_model(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    cfg = Qwen2Config(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=151935,
    )
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    vocab = {f"<{i}>": i for i in range(cfg.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<151935>", "model_max_length": 32768})
    )


def greedy(model_dir: Path, dtype: str, prompts: Path, max_new: int, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[dtype]
    torch.backends.cuda.matmul.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch_dtype).cuda().eval()
    lines = []
    for line in prompts.read_text().splitlines():
        if not line.strip():
            continue
        ids = torch.tensor([json.loads(line)], device="cuda")
        with torch.no_grad():
            logits = model(ids).logits[0, -1].float()
            gen = model.generate(
                ids,
                max_new_tokens=max_new,
                min_new_tokens=max_new,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        top = torch.topk(logits, 5)
        lines.append(
            json.dumps(
                {
                    "token_ids": gen[0, ids.shape[1] :].tolist(),
                    "top5_ids": top.indices.tolist(),
                    "top5_logits": top.values.tolist(),
                }
            )
        )
    out.write_text("\n".join(lines) + "\n")


def compare(theirs: Path, ours: Path, require_equal: bool) -> int:
    def read(p: Path) -> list[list[int]]:
        return [json.loads(l)["token_ids"] for l in p.read_text().splitlines() if l.strip()]

    a, b = read(theirs), read(ours)
    if len(a) != len(b):
        print(json.dumps({"error": f"{len(a)} prompts from transformers, {len(b)} from tandem"}))
        return 1
    prefixes = []
    for x, y in zip(a, b):
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        prefixes.append(n)
    equal = sum(x == y for x, y in zip(a, b))
    print(
        json.dumps(
            {
                "prompts": len(a),
                "identical": equal,
                "first_token_equal": sum(p > 0 for p in prefixes),
                "common_prefix_lengths": prefixes,
                "tokens_per_prompt": len(a[0]) if a else 0,
            }
        )
    )
    return 0 if (equal == len(a) or not require_equal) else 1


def roofline() -> None:
    import torch

    def timed(fn, reps: int) -> float:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / reps

    n = 1 << 30  # 4 GiB of f32: far beyond the 60 MB L2
    src = torch.empty(n, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), 10)
    del src, dst
    m = 8192
    a = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    mm_s = timed(lambda: a @ b, 10)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(0),
                "copy_bytes_per_s": 2 * 4 * n / copy_s,
                "bf16_flop_per_s": 2 * m**3 / mm_s,
            }
        )
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-model")
    mk.add_argument("dir", type=Path)
    g = sub.add_parser("greedy")
    g.add_argument("--model", type=Path, required=True)
    g.add_argument("--dtype", choices=["bf16", "f32"], required=True)
    g.add_argument("--prompts", type=Path, required=True)
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("--theirs", type=Path, required=True)
    c.add_argument("--ours", type=Path, required=True)
    c.add_argument("--require-equal", action="store_true")
    sub.add_parser("roofline")
    a = p.parse_args()
    if a.cmd == "make-model":
        make_model(a.dir)
    elif a.cmd == "greedy":
        greedy(a.model, a.dtype, a.prompts, a.max_new_tokens, a.out)
    elif a.cmd == "compare":
        return compare(a.theirs, a.ours, a.require_equal)
    else:
        roofline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
