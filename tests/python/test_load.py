"""Load: TANDEM_LOAD_CLIENTS (default 1000) concurrent streaming chat
clients on one event loop against `tandem serve` in P/D with 4 decode
workers and a waiting queue (--max-waiting) far smaller than the burst, so
some refusals happen by design.

Every request must either finish (a finish_reason, then [DONE]) or be
refused with 429 and Retry-After: no 5xx, no other error, no hang. It
prints the figures a rerun compares (refusal and completion latencies,
peak RSS of the router and of each worker, requests per decode worker) and
asserts that single-turn traffic with distinct prompts spreads over the
decode workers within 1.3x (busiest against idlest).

    TANDEM_LOAD_CLIENTS=5000 .venv/bin/pytest tests/python/test_load.py -s

TANDEM_LOAD_ROUTING (kv-aware, least-loaded, round-robin) reruns it under
another --routing than the default, to compare.
"""

import asyncio
import contextlib
import json
import math
import os
import re
import resource
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import MODEL, Server

CLIENTS = int(os.environ.get("TANDEM_LOAD_CLIENTS", "1000"))
DECODE_WORKERS = 4
MAX_WAITING = 256
MAX_TOKENS = 8
# Far above what a slow CI core needs to drain the burst (seconds), short
# enough that a hung stream fails the test well inside the job's budget.
REQUEST_TIMEOUT_S = float(os.environ.get("TANDEM_LOAD_TIMEOUT", "30"))
MAX_IMBALANCE = 1.3
ROUTING = os.environ.get("TANDEM_LOAD_ROUTING")
# What each decode worker counts: every internal request it took (whole,
# or decoding after a remote prefill).
WORKER_COUNTER = "tandem_worker_requests_total"
DECODE_ROUTES = ("generate", "decode")


@dataclass
class Outcome:
    """One client's result: `kind` is done, refused or error."""
    kind: str
    seconds: float
    detail: str = ""


@pytest.fixture(scope="module")
def load_server(model_dir):
    """Logs at info for the command-line layer only, so serve's stderr names
    each worker's URL ("worker listening") without a line per request."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUST_LOG", "warn,tandem_server::cli=info")
        routing = ["--routing", ROUTING] if ROUTING else []
        s = Server(model_dir, "--prefill-workers", "1", "--decode-workers", str(DECODE_WORKERS),
                   "--max-waiting", str(MAX_WAITING), *routing)
    yield s
    s.stop()


def raise_fd_limit(needed: int):
    """Each client holds a socket; the default soft limit (often 1024) is
    below a thousand clients plus the interpreter's own files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def worker_log(server: Server) -> dict[str, dict[str, str]]:
    """Worker name (prefill-0, decode-1, ...) to the fields of its latest
    "worker listening" line in serve's log (url, and pid where logged): a
    restarted worker logs again, on its new port."""
    found: dict[str, dict[str, str]] = {}
    for line in list(server.stderr):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # colours, should the log have them
        if "worker listening" in line:
            fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line.split("worker listening", 1)[1]))
            fields = {k: v.strip('"') for k, v in fields.items()}
            if "worker" in fields and "url" in fields:
                found[fields["worker"]] = fields
    return found


def worker_urls(server: Server) -> dict[str, str]:
    return {name: f["url"] for name, f in worker_log(server).items()}


def counter(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a counter's samples on one process's /metrics, over the
    samples whose labels include `labels`."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in (labels or {}).items()):
            total += float(m.group(2))
    return total


def decode_counts(server: Server) -> dict[str, int]:
    """Requests each decode worker took, by its own /metrics."""
    counts = {}
    for name, url in sorted(worker_urls(server).items()):
        if name.startswith("decode"):
            counts[name] = int(sum(counter(url, WORKER_COUNTER, {"route": r}) for r in DECODE_ROUTES))
    return counts


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of one process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (field 4 of /proc/*/stat)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces; fields after it don't.
        if int(text.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(stat.parent.name))
    return sorted(kids)


def role_of(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if b"--role" in args:
        return args[args.index(b"--role") + 1].decode()
    return "?"


def peak_rss(server: Server) -> dict[str, float]:
    """Peak RSS of the router (the serve process) and of each worker, named
    as serve's log names it when the log gives its pid."""
    names = {int(f["pid"]): name for name, f in worker_log(server).items() if f.get("pid", "").isdigit()}
    out = {"router": peak_rss_mib(server.proc.pid)}
    for pid in children(server.proc.pid):
        out[names.get(pid, f"{role_of(pid)} (pid {pid})")] = peak_rss_mib(pid)
    return out


async def read_stream(response: httpx.Response) -> tuple[str | None, bool]:
    """The last finish_reason in an SSE chat stream, and whether [DONE] came."""
    finish, done = None, False
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            done = True
            continue
        for choice in json.loads(data).get("choices", []):
            finish = choice.get("finish_reason") or finish
    return finish, done


class SentAt:
    """httpcore's trace hook: when the request's last byte was written. The
    clients' latencies count from there, leaving out the time one event
    loop takes to open a thousand connections after the gate opens."""

    def __init__(self):
        self.t: float | None = None

    async def __call__(self, event: str, info: dict):
        if event == "http11.send_request_body.complete":
            self.t = time.monotonic()


async def one_client(client: httpx.AsyncClient, i: int, start: asyncio.Event) -> Outcome:
    """One single-turn streamed chat request with a prompt of its own."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"load client {i}: say something"}],
            "max_tokens": MAX_TOKENS, "stream": True}
    sent = SentAt()
    await start.wait()
    t0 = time.monotonic()

    def since_sent() -> float:
        return time.monotonic() - (sent.t or t0)

    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            async with client.stream("POST", "/v1/chat/completions", json=body,
                                     extensions={"trace": sent}) as r:
                if r.status_code == 429:
                    seconds = since_sent()
                    await r.aread()
                    if not r.headers.get("retry-after"):
                        return Outcome("error", seconds, "429 without Retry-After")
                    return Outcome("refused", seconds)
                if r.status_code != 200:
                    text = (await r.aread()).decode(errors="replace")
                    return Outcome("error", since_sent(), f"HTTP {r.status_code}: {text[:200]}")
                finish, done = await read_stream(r)
                seconds = since_sent()
                if finish is None or not done:
                    return Outcome("error", seconds, f"stream ended early (finish={finish}, done={done})")
                return Outcome("done", seconds)
    except TimeoutError:
        return Outcome("error", since_sent(), f"no answer within {REQUEST_TIMEOUT_S} s")
    except Exception as e:  # noqa: BLE001 - every failure is a finding, reported by kind
        return Outcome("error", since_sent(), f"{type(e).__name__}: {e}")


async def burst(url: str, n: int) -> list[Outcome]:
    """n clients, released together once all wait at the gate. Each has its
    own connection pool, as n separate users would: one shared httpx pool
    of n connections costs O(n) per request it assigns, which on a
    thousand clients makes the client, not the server, the bottleneck.
    They share one TLS context (never used on http://, but building one
    each takes ~20 ms)."""
    tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, verify=tls, timeout=REQUEST_TIMEOUT_S)) for _ in range(n)]
        start = asyncio.Event()
        tasks = [asyncio.create_task(one_client(c, i, start)) for i, c in enumerate(clients)]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def table(outcomes: list[Outcome], wall: float, rss: dict[str, float], counts: dict[str, int]) -> str:
    """The figures, one per row, for the log of a CI run or a rerun."""
    by = {k: [o.seconds for o in outcomes if o.kind == k] for k in ("done", "refused", "error")}
    ratio = max(counts.values()) / max(1, min(counts.values())) if counts else float("nan")
    rows = [
        ("clients", str(len(outcomes))),
        ("wall time", f"{wall:.1f} s"),
        ("completed", str(len(by["done"]))),
        ("refused 429", str(len(by["refused"]))),
        ("other errors (must be 0)", str(len(by["error"]))),
        ("refusal latency p50 / p99", f"{ms(percentile(by['refused'], 50))} / {ms(percentile(by['refused'], 99))}"),
        ("completion latency p50 / p99", f"{ms(percentile(by['done'], 50))} / {ms(percentile(by['done'], 99))}"),
        *((f"peak RSS {name}", f"{mib:.1f} MiB") for name, mib in rss.items()),
        *((f"requests on {name}", str(n)) for name, n in counts.items()),
        (f"decode max/min ratio (<= {MAX_IMBALANCE})", f"{ratio:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


async def test_load_burst_completes_or_is_refused_and_spreads(load_server):
    """The counts are deltas of the workers' own counters, so a rerun on a
    server that already served requests still compares this burst only."""
    raise_fd_limit(CLIENTS)
    before = decode_counts(load_server)
    t0 = time.monotonic()
    outcomes = await burst(load_server.url, CLIENTS)
    wall = time.monotonic() - t0
    after = decode_counts(load_server)
    counts = {name: after[name] - before.get(name, 0) for name in after}
    rss = peak_rss(load_server)
    print(f"\nload test: {CLIENTS} streaming clients, max_tokens {MAX_TOKENS}, --max-waiting {MAX_WAITING}, "
          f"{DECODE_WORKERS} decode workers, routing {ROUTING or 'default'}\n" + table(outcomes, wall, rss, counts))

    errors = [o for o in outcomes if o.kind == "error"]
    kinds = sorted({o.detail for o in errors})
    assert not errors, f"{len(errors)} requests neither completed nor got 429 + Retry-After: {kinds[:5]}"
    assert any(o.kind == "done" for o in outcomes)
    if CLIENTS > 2 * MAX_WAITING:
        assert any(o.kind == "refused" for o in outcomes), "a burst this far over --max-waiting refused none"
    assert len(counts) == DECODE_WORKERS, f"decode workers found in the log: {sorted(counts)}"
    completed = sum(o.kind == "done" for o in outcomes)
    assert sum(counts.values()) == completed, f"decode workers counted {counts}, clients completed {completed}"
    busiest, idlest = max(counts.values()), min(counts.values())
    assert busiest <= MAX_IMBALANCE * idlest, (
        f"decode workers unbalanced: {counts} (busiest {busiest} > {MAX_IMBALANCE} x idlest {idlest})")
