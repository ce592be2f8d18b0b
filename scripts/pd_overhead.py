#!/usr/bin/env python3
"""P/D overhead: TTFT and end-to-end latency of prefill/decode disaggregation
against colocated serving, same machine, same run (issue 7, item 9).

Starts two servers from one tandem binary over one model:
  * P/D:       `tandem serve --pd-threshold 0` (router + 1 prefill + 1 decode
               worker, KV pulled over UCX on loopback)
  * colocated: `tandem serve --colocated`     (one engine)
then sends the same prompts to both, alternating request by request so both
see the same machine load, one request at a time (latency, not throughput).
Prompts are random token ids (distinct per request: no prefix-cache hits),
streamed /v1/completions, greedy, ignore_eos.

Usage: python3 scripts/pd_overhead.py --tandem target/release/tandem \
           [--model DIR] [--lengths 512 2048] [--requests 8] [--out FILE]
Writes JSON and prints one summary line per length.
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import openai

decode_urls: list[str] = []


def pull_stats(url):
    """(seconds, pulls, bytes) so far from a decode worker's /metrics."""
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    def val(name):
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                   if l.startswith(name + "{") or l.startswith(name + " "))
    return val("tandem_kv_pull_seconds_sum"), val("tandem_kv_pull_seconds_count"), val("tandem_kv_pull_bytes_total")


def start(tandem, model, *extra):
    args = [tandem, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0",
            "--served-model-name", "m", "--kv-cache-memory", "1GiB", *extra]
    env = dict(os.environ, RUST_LOG="tandem::cli::serve=info,warn")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    found = []
    decode_urls.clear()

    def read():
        for line in proc.stdout:
            m = re.search(r"http://127\.0\.0\.1:\d+", line)
            if m:
                found.append(m.group(0))
                return

    def read_err():
        for line in proc.stderr:
            m = re.search(r'worker="decode-\d+" url="(http://[^"]+)"', line)
            if m:
                decode_urls.append(m.group(1))

    threading.Thread(target=read_err, daemon=True).start()
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(300)
    if not found:
        proc.kill()
        sys.exit(f"tandem serve {extra} did not start")
    url = found[0]
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    sys.exit("server never became healthy")


def one(client, prompt, max_tokens):
    t0 = time.perf_counter()
    ttft = None
    n = 0
    stream = client.completions.create(model="m", prompt=prompt, max_tokens=max_tokens,
                                       temperature=0, stream=True, extra_body={"ignore_eos": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text is not None:
            if ttft is None:
                ttft = time.perf_counter() - t0
            n += 1
    return ttft, time.perf_counter() - t0


def summary(xs):
    return {"median_ms": 1000 * statistics.median(xs), "mean_ms": 1000 * statistics.fmean(xs),
            "min_ms": 1000 * min(xs), "max_ms": 1000 * max(xs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--model", default="demo-models/small")
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--out", default="docs/data/pd-overhead.json")
    a = ap.parse_args()
    pd_proc, pd_url = start(a.tandem, a.model, "--pd-threshold", "0")
    decode_url = decode_urls[0] if decode_urls else None
    co_proc, co_url = start(a.tandem, a.model, "--colocated")
    clients = {"pd": openai.OpenAI(base_url=pd_url + "/v1", api_key="x", max_retries=0, timeout=600),
               "colocated": openai.OpenAI(base_url=co_url + "/v1", api_key="x", max_retries=0, timeout=600)}
    rng = random.Random(0)
    results = {"load_avg_at_start": os.getloadavg()[0], "model": a.model, "requests_per_point": a.requests, "max_tokens": a.max_tokens, "points": []}
    try:
        for mode in clients:  # warm-up: first-touch of weights and KV pages
            one(clients[mode], [rng.randrange(10, a.vocab) for _ in range(64)], 4)
        for length in a.lengths:
            samples = {m: {"ttft": [], "e2e": []} for m in clients}
            before = pull_stats(decode_url) if decode_url else None
            for i in range(a.requests):
                order = list(clients) if i % 2 == 0 else list(reversed(list(clients)))
                for mode in order:
                    prompt = [rng.randrange(10, a.vocab) for _ in range(length)]
                    ttft, e2e = one(clients[mode], prompt, a.max_tokens)
                    samples[mode]["ttft"].append(ttft)
                    samples[mode]["e2e"].append(e2e)
            point = {"prompt_tokens": length}
            if before:
                after = pull_stats(decode_url)
                pulls = max(after[1] - before[1], 1)
                point["kv_pull_mean_ms"] = 1000 * (after[0] - before[0]) / pulls
                point["kv_pull_mean_bytes"] = (after[2] - before[2]) / pulls
            for mode, s in samples.items():
                point[mode] = {"ttft": summary(s["ttft"]), "e2e": summary(s["e2e"])}
            pd_t, co_t = point["pd"]["ttft"]["median_ms"], point["colocated"]["ttft"]["median_ms"]
            pd_e, co_e = point["pd"]["e2e"]["median_ms"], point["colocated"]["e2e"]["median_ms"]
            point["ttft_overhead_pct"] = 100 * (pd_t - co_t) / co_t
            point["e2e_overhead_pct"] = 100 * (pd_e - co_e) / co_e
            results["points"].append(point)
            print(f"prompt {length}: TTFT median P/D {pd_t:.1f} ms vs colocated {co_t:.1f} ms "
                  f"({point['ttft_overhead_pct']:+.1f}%) | E2E {pd_e:.1f} vs {co_e:.1f} ms "
                  f"({point['e2e_overhead_pct']:+.1f}%) | KV pull {point.get('kv_pull_mean_ms', float('nan')):.1f} ms "
                  f"for {point.get('kv_pull_mean_bytes', 0) / 1e6:.1f} MB", flush=True)
    finally:
        pd_proc.terminate()
        co_proc.terminate()
        pd_proc.wait(60)
        co_proc.wait(60)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
