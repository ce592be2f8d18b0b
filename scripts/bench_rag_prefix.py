#!/usr/bin/env python3
"""Prefix-cache hit rate and TTFT of repeated RAG questions against a
running `tandem serve` (start it with `--rag-prompt-order stable` or
`kaito` to compare the two prompt layouts; see docs/rag.md).

Indexes tests/python/data/rag_corpus.json, then asks its first N questions
R times over (all N, then all N again, ...) as streamed chat completions
with `index_name`, a fixed system prompt and `max_tokens` large enough for
KAITO's budget formula to leave room for context. Each stream is closed at
its first content token (TTFT = send to first token). The hit rate is the
delta of vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total
over the run. Prints one JSON line. Standard library only."""

import argparse
import json
import statistics
import time
import urllib.request
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "tests/python/data/rag_corpus.json"
SYSTEM = (
    "You are the help desk assistant of a public science museum. Answer visitors' questions "
    "in two or three plain sentences, use only the documents you are given, cite nothing, and "
    "say so when the documents do not answer the question. Never invent numbers, names or "
    "dates. Keep a friendly tone suitable for families, avoid jargon, and when a visitor asks "
    "about an exhibit that is not covered, suggest asking a member of staff at the front desk. "
) * 2


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def metric(url, name):
    with urllib.request.urlopen(url + "/metrics", timeout=60) as r:
        text = r.read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith(name + "{") or l.startswith(name + " "))


def ttft(url, model, index, question, max_tokens):
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "index_name": index,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]}
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        sources = None
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "source_nodes" in event:
                sources = event["source_nodes"]
            if any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                return time.perf_counter() - start, len(sources or [])
    raise RuntimeError("stream ended without a token")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="demo-models/small")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    corpus = json.loads(CORPUS.read_text())
    docs = [{"text": d["text"], "metadata": {"key": d["key"]}} for d in corpus["documents"]]
    post(a.url + "/index", {"index_name": "bench", "documents": docs})
    questions = [q["q"] for q in corpus["questions"][: a.questions]]
    hits0 = metric(a.url, "vllm:prefix_cache_hits_total")
    queries0 = metric(a.url, "vllm:prefix_cache_queries_total")
    times, chunks = [], []
    for _ in range(a.repeats):
        for q in questions:
            t, n = ttft(a.url, a.model, "bench", q, a.max_tokens)
            times.append(t)
            chunks.append(n)
    hits = metric(a.url, "vllm:prefix_cache_hits_total") - hits0
    queries = metric(a.url, "vllm:prefix_cache_queries_total") - queries0
    times.sort()
    print(json.dumps({
        "bench": "rag_prefix_cache", "label": a.label, "requests": len(times),
        "questions": a.questions, "repeats": a.repeats,
        "mean_chunks_in_prompt": round(statistics.mean(chunks), 2),
        "prefix_cache_queries": int(queries), "prefix_cache_hits": int(hits),
        "hit_rate": round(hits / queries, 4) if queries else None,
        "ttft_p50_ms": round(1000 * times[len(times) // 2], 1),
        "ttft_mean_ms": round(1000 * statistics.mean(times), 1),
        "ttft_p90_ms": round(1000 * times[int(0.9 * (len(times) - 1))], 1),
    }))


if __name__ == "__main__":
    main()
