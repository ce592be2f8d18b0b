#!/usr/bin/env python3
"""Same-host KV pull of long prompts through real prefill/decode workers, for
two tandem binaries in one run (e.g. main, whose CPU arena is registered
user memory, against a build whose arena UCX allocated).

For each binary it starts `tandem worker --role prefill`, `--role decode`
(UCX over shared memory: --ucx-transports posix,sysv,cma) and a `tandem
router --pd-threshold 0`, all up at once; then sends one request at a time,
alternating between the binaries so both see the same machine load. Each
request is a distinct random prompt of --tokens token ids (no prefix-cache
hits), max_tokens 2, greedy. The decode worker pulls the prompt's KV before
the second token; the pull's bytes and seconds come from its /metrics
(tandem_kv_pull_bytes_total, tandem_kv_pull_seconds), read before and after
each request, with the decode worker's minor page faults over the request
(/proc/PID/stat). The arena's memory kind comes from /internal/status.

Usage: python3 benches/pd_pull.py --model DIR --bin main=PATH --bin arena=PATH \
           [--tokens 4000] [--requests 5] [--out FILE]
Writes JSON and prints one summary line per binary.
"""

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request


def start(args, label):
    """Starts a tandem process; returns (Popen, url) once it printed its URL."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    found = []

    def read():
        for line in proc.stdout:
            m = re.search(r"http://127\.0\.0\.1:\d+", line)
            if m and not found:
                found.append(m.group(0))

    threading.Thread(target=read, daemon=True).start()
    for _ in range(3000):
        if found:
            return proc, found[0]
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"{label}: {' '.join(args)} did not start")


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def pull_counters(url):
    """(seconds_sum, pulls, bytes) so far from a decode worker's /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()

    def val(name):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    return (val("tandem_kv_pull_seconds_sum"), val("tandem_kv_pull_seconds_count"),
            val("tandem_kv_pull_bytes_total"))


def minor_faults(pid):
    """Minor page faults of a process so far (field 10 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def complete(url, prompt):
    body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 2,
                       "temperature": 0, "ignore_eos": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--bin", action="append", required=True, help="LABEL=PATH")
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--kv-cache-memory", default="512MiB")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--out", default="pd-pull.json")
    a = ap.parse_args()

    setups, procs = [], []
    try:
        for spec in a.bin:
            label, path = spec.split("=", 1)
            common = ["--model", a.model, "--host", "127.0.0.1", "--port", "0",
                      "--served-model-name", "m"]
            workers, pids = {}, {}
            for role in ("prefill", "decode"):
                p, url = start([path, "worker", "--role", role, *common, "--kv-cache-memory",
                                a.kv_cache_memory, "--ucx-transports", "posix,sysv,cma"], label)
                procs.append(p)
                workers[role] = url
                pids[role] = p.pid
            p, router = start([path, "router", *common, "--pd-threshold", "0",
                               "--prefill", workers["prefill"], "--decode", workers["decode"]],
                              label)
            procs.append(p)
            memory = {role: get_json(u + "/internal/status").get("kv_arena", {}).get(
                "memory", "(not reported)") for role, u in workers.items()}
            setups.append({"label": label, "bin": path, "router": router,
                           "decode": workers["decode"], "decode_pid": pids["decode"], "arena_memory": memory, "pulls": []})

        rng = random.Random(0)
        for i in range(a.requests):
            for s in setups:
                prompt = [rng.randrange(16, a.vocab - 16) for _ in range(a.tokens)]
                before = pull_counters(s["decode"])
                faults0 = minor_faults(s["decode_pid"])
                t0 = time.perf_counter()
                complete(s["router"], prompt)
                e2e = time.perf_counter() - t0
                after = pull_counters(s["decode"])
                faults = minor_faults(s["decode_pid"]) - faults0
                secs, n, nbytes = (after[j] - before[j] for j in range(3))
                if n != 1:
                    sys.exit(f"{s['label']}: request {i} made {n} pulls, expected 1")
                s["pulls"].append({"seconds": secs, "bytes": nbytes, "e2e_seconds": e2e,
                                   "decode_minor_faults": faults})
                print(f"{s['label']} #{i}: {nbytes / 1e6:.1f} MB in {secs * 1e3:.1f} ms "
                      f"({nbytes / secs / 1e9:.2f} GB/s), e2e {e2e:.2f} s, "
                      f"decode worker minor faults {faults}", flush=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()

    for s in setups:
        secs = [p["seconds"] for p in s["pulls"]]
        nbytes = s["pulls"][0]["bytes"]
        s["median_seconds"] = statistics.median(secs)
        s["median_gb_per_s"] = nbytes / s["median_seconds"] / 1e9
        print(f"{s['label']}: arena {s['arena_memory']['decode']} / "
              f"{s['arena_memory']['prefill']}; {a.tokens}-token prompt, {nbytes / 1e6:.1f} MB: "
              f"pull median {s['median_seconds'] * 1e3:.1f} ms "
              f"(min {min(secs) * 1e3:.1f}, max {max(secs) * 1e3:.1f}), "
              f"{s['median_gb_per_s']:.2f} GB/s")
    with open(a.out, "w") as f:
        json.dump({"tokens": a.tokens, "requests": a.requests, "setups": setups}, f, indent=1)


if __name__ == "__main__":
    main()
