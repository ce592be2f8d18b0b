"""Process-level chaos against `tandem serve` with prefill/decode
disaggregation (`--pd-threshold 0`: every prompt is prefilled on the prefill
worker, its KV pulled by the decode worker). Workers are SIGKILLed while
streams run (the supervisor restarts them on a new port and the router
follows), the prefill worker is SIGSTOPped past its KV lease, and 200
clients hang up at random points.

Every scenario checks that each request completes or ends with an OpenAI
error object before its deadline (nothing hangs, nothing is cut off
silently), that the server serves through the affected worker again, that
no worker holds KV blocks once the requests are gone, and that no worker
process grew in threads, open files or memory beyond a stated bound. The
figures are printed as one table when the module ends (for
docs/reliability.md).

Worker pids and URLs come from `serve`'s own log ("worker listening",
target tandem_server::cli::supervise, info level) and from /proc."""

import os
import random
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from conftest import MODEL, Server, collect_outcomes, print_figures

# Seconds one request may take, end to end, whatever happens to the workers.
DEADLINE = 20.0
# A held prompt's KV is freed this long after nobody pulled it.
LEASE_S = 2.0
# Growth allowed per surviving worker between its first sighting (after a
# warm-up) and the end of a scenario.
MAX_THREADS = 4
MAX_FDS = 16
MAX_RSS_MIB = 64
CONCURRENCY = 16
LOG_FILTER = "warn,tandem_server::cli::supervise=info"
LISTENING = re.compile(r'worker listening worker="([^"]+)" pid=(\d+) url="([^"]+)"')


@dataclass
class Outcome:
    """How one request ended: completed, closed (the client hung up on
    purpose), error (an OpenAI error object; `detail` says which) or lost
    (no error object: connection dropped, cut off, or past the deadline)."""
    kind: str
    detail: str = ""
    chunks: int = 0
    seconds: float = 0.0


@dataclass
class Row:
    scenario: str
    outcomes: list[Outcome]
    leaked_blocks: int
    recover_s: float | None
    growth: str
    notes: list[str] = field(default_factory=list)


class Chaos:
    """The server under test, its workers, and the figures gathered."""

    def __init__(self, server: Server):
        self.server = server
        self.rng = random.Random(19)
        # pid -> (threads, fds, rss KiB) at first sighting after a warm-up.
        self.baseline: dict[int, tuple[int, int, int]] = {}
        self.rows: list[Row] = []

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.url + "/v1", api_key="unused", max_retries=0,
                             timeout=openai.Timeout(DEADLINE - 5, connect=3.0))

    def workers(self) -> dict[str, tuple[int, str]]:
        """Worker name -> (pid, url) of its latest process, from serve's log."""
        found = {}
        for line in list(self.server.stderr):
            m = LISTENING.search(line)
            if m:
                found[m.group(1)] = (int(m.group(2)), m.group(3))
        return found

    def worker(self, role: str) -> tuple[int, str]:
        [(pid, url)] = [v for name, v in self.workers().items() if name.startswith(role + "-")]
        return pid, url

    def metric(self, name: str, *labels: str) -> float:
        """Sum of the router's `name` samples whose labels contain all of `labels`."""
        return metric_at(self.server.url, name, *labels)

    def restarts(self, role: str) -> float:
        return self.metric("tandem_worker_restarts_total", f'role="{role}"')

    def remote_prefills(self) -> float:
        return self.metric("tandem_router_requests_total", 'path="prefill_then_decode"')

    def live_workers(self) -> list[int]:
        """The worker processes now alive: children of serve in /proc."""
        return [p for p in children(self.server.proc.pid) if proc_state(p) not in ("", "Z")]

    def warm_up(self):
        """CONCURRENCY whole requests at once (so the router's connection
        pools are as large as a scenario makes them), then the figures of
        any worker not seen yet."""
        def one(_):
            c.completions.create(model=MODEL, prompt=prompt(random.Random(), 200), max_tokens=8,
                                 extra_body={"ignore_eos": True})
        c = self.client()
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            list(pool.map(one, range(CONCURRENCY)))
        for pid in self.live_workers():
            if pid not in self.baseline:
                self.baseline[pid] = figures(pid)

    def restarted(self, role: str, old_pid: int, restarts_before: float):
        """Waits until `role`'s worker was started again and listens."""
        wait_for(f"{role} restart", lambda: self.restarts(role) > restarts_before
                 and self.worker(role)[0] != old_pid, 20)

    def growth(self) -> tuple[str, list[str]]:
        """Largest growth over the workers seen at a warm-up and still alive,
        and a complaint for each bound exceeded."""
        worst = [0, 0, 0]
        over = []
        for pid in self.live_workers():
            if pid not in self.baseline:
                continue
            now, then = figures(pid), self.baseline[pid]
            d = [now[0] - then[0], now[1] - then[1], (now[2] - then[2]) // 1024]
            worst = [max(a, b) for a, b in zip(worst, d)]
            for what, got, bound in zip(("threads", "fds", "RSS MiB"), d, (MAX_THREADS, MAX_FDS, MAX_RSS_MIB)):
                if got > bound:
                    over.append(f"worker {pid}: {what} +{got} (bound +{bound})")
        return f"{worst[0]:+d}/{worst[1]:+d}/{worst[2]:+d}", over

    def kv_blocks_in_use(self) -> dict[str, int]:
        """Blocks held by sequences or leases on each live worker."""
        return {name: blocks_in_use(url) for name, (pid, url) in self.workers().items()
                if proc_state(pid) not in ("", "Z")}

    def settle(self) -> int:
        """Waits (past the lease timeout) for every worker to hold no KV;
        returns the blocks still held at the end."""
        deadline = time.monotonic() + LEASE_S + 6
        while True:
            held = sum(self.kv_blocks_in_use().values())
            if held == 0 or time.monotonic() > deadline:
                return held
            time.sleep(0.2)

    def fallbacks(self) -> float:
        """Requests whose prompt the decode worker computed itself."""
        return self.metric("tandem_router_local_prefill_fallbacks_total")

    def finish(self, scenario: str, outcomes: list[Outcome], recover_s: float | None,
               notes: list[str] | None = None) -> Row:
        """Records the scenario's row and asserts what every scenario owes."""
        leaked = self.settle()
        growth, over = self.growth()
        row = Row(scenario, outcomes, leaked, recover_s, growth, notes or [])
        self.rows.append(row)
        lost = [o for o in outcomes if o.kind == "lost"]
        assert not lost, f"{scenario}: {len(lost)} requests lost: {Counter(o.detail for o in lost)}"
        assert leaked == 0, f"{scenario}: {leaked} KV blocks still held: {self.kv_blocks_in_use()}"
        assert not over, f"{scenario}: workers grew: {over}"
        assert self.server.proc.poll() is None, "serve is still running"
        return row


def metric_at(base: str, name: str, *labels: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(l in line for l in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def blocks_in_use(worker_url: str) -> int:
    """vllm:kv_cache_usage_perc times the worker's block count."""
    with urllib.request.urlopen(worker_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    usage = float(re.search(r"^vllm:kv_cache_usage_perc\{[^}]*\} (\S+)$", text, re.M).group(1))
    blocks = int(re.search(r'num_gpu_blocks="(\d+)"', text).group(1))
    return round(usage * blocks)


def children(ppid: int) -> list[int]:
    """Pids whose parent is `ppid`, from /proc/*/stat."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
                out.append(int(entry))
    return sorted(out)


def proc_state(pid: int) -> str:
    """One-letter state of `pid`, or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def figures(pid: int) -> tuple[int, int, int]:
    """Threads, open file descriptors and resident KiB of `pid`. Resident
    means anonymous plus file-backed pages: the KV arena is shared memory,
    resident as its blocks are first used, up to --kv-cache-memory, so it
    is left out (RssShmem)."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
    rss = sum(int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) for k in ("RssAnon", "RssFile"))
    return threads, len(os.listdir(f"/proc/{pid}/fd")), rss


def prompt(rng: random.Random, n: int) -> list[int]:
    """`n` random token ids away from the special ones: no two prompts share
    a prefix, so nothing is served from a prefix cache."""
    return [rng.randrange(10, 2000) for _ in range(n)]


def stream_one(client: openai.OpenAI, tokens: list[int], max_tokens: int, close_after: int | None = None,
               on_chunk=None) -> Outcome:
    """Streams one completion; hangs up after `close_after` chunks if given."""
    start = time.monotonic()
    chunks, finished = 0, False
    try:
        stream = client.completions.create(model=MODEL, prompt=tokens, max_tokens=max_tokens, stream=True,
                                           extra_body={"ignore_eos": True})
        try:
            for chunk in stream:
                if close_after is not None and chunks >= close_after:
                    return Outcome("closed", chunks=chunks, seconds=time.monotonic() - start)
                chunks += 1
                if on_chunk:
                    on_chunk(chunks)
                if chunk.choices and chunk.choices[0].finish_reason:
                    finished = True
        finally:
            stream.close()
    except openai.APIConnectionError as e:
        return Outcome("lost", type(e).__name__, chunks, time.monotonic() - start)
    except openai.APIStatusError as e:
        return Outcome("error", f"{e.status_code} {e.type}", chunks, time.monotonic() - start)
    except openai.APIError as e:
        return Outcome("error", f"mid-stream {e.type}", chunks, time.monotonic() - start)
    seconds = time.monotonic() - start
    if seconds > DEADLINE:
        return Outcome("lost", "past the deadline", chunks, seconds)
    if not finished:
        return Outcome("lost", "ended without finish_reason or error", chunks, seconds)
    return Outcome("completed", chunks=chunks, seconds=seconds)


def run_streams(chaos: Chaos, jobs: list[dict], stagger: float = 0.0) -> tuple[list, ThreadPoolExecutor]:
    """Starts `jobs` (keyword arguments of stream_one) on a thread pool."""
    pool = ThreadPoolExecutor(max_workers=CONCURRENCY)
    client = chaos.client()
    futures = []
    for job in jobs:
        futures.append(pool.submit(stream_one, client, **job))
        if stagger:
            time.sleep(stagger)
    return futures, pool


def collect(futures, pool) -> list[Outcome]:
    """Every outcome; a request still running past the deadline is lost."""
    return collect_outcomes(futures, pool, DEADLINE + 5,
                            lambda: Outcome("lost", "still running past the deadline"))


def wait_for(what: str, check, limit: float) -> float:
    """Polls `check` until true; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < limit, f"{what} did not happen within {limit} s"
        time.sleep(0.05)
    return time.monotonic() - start


def served_remotely(chaos: Chaos) -> bool:
    """One request, prefilled on the prefill worker and decoded: True when
    it succeeded that way."""
    before = chaos.remote_prefills()
    try:
        r = chaos.client().completions.create(model=MODEL, prompt=prompt(chaos.rng, 64), max_tokens=4,
                                              extra_body={"ignore_eos": True})
    except openai.APIError:
        return False
    return r.choices[0].finish_reason == "length" and chaos.remote_prefills() > before


def start_server(model_dir: Path, *extra: str) -> Server:
    """A P/D `tandem serve`, every prompt prefilled remotely, whose log
    names each worker's pid and URL."""
    old = os.environ.get("RUST_LOG")
    os.environ["RUST_LOG"] = LOG_FILTER
    try:
        return Server(model_dir, "--pd-threshold", "0", "--shutdown-timeout", "5", *extra)
    finally:
        if old is None:
            del os.environ["RUST_LOG"]
        else:
            os.environ["RUST_LOG"] = old


@pytest.fixture(scope="module")
def chaos(model_dir, request):
    s = start_server(model_dir, "--kv-lease-timeout", str(LEASE_S))
    c = Chaos(s)
    yield c
    code = s.stop()
    print_table(request.config, c.rows)
    assert code == 0, "serve stopped cleanly after the chaos:\n" + "".join(s.stderr[-20:])


def print_table(config, rows: list[Row]):
    """The figures, as a Markdown table on the terminal (even under -q)."""
    if not rows:
        return
    table = []
    for r in rows:
        kinds = Counter(o.kind for o in r.outcomes)
        errors = Counter(o.detail for o in r.outcomes if o.kind == "error")
        err = ", ".join(f"{n} {t}" for t, n in errors.most_common()) or "0"
        rec = "–" if r.recover_s is None else f"{r.recover_s:.1f} s"
        table.append([r.scenario, len(r.outcomes), kinds["completed"], kinds["closed"], err, kinds["lost"],
                      r.leaked_blocks, rec, r.growth, "; ".join(r.notes)])
    print_figures(config, "chaos figures",
                  ["scenario", "sent", "completed", "closed by client", "errored (by type)", "lost",
                   "leaked KV blocks", "time to recover", "worker growth threads/fds/RSS MiB", "notes"],
                  table,
                  f"(growth: the largest over the workers alive since a warm-up, RSS without the shared-memory "
                  f"KV arena; bounds per worker: threads +{MAX_THREADS}, fds +{MAX_FDS}, RSS +{MAX_RSS_MIB} MiB; "
                  f"deadline {DEADLINE:.0f} s per request; KV lease {LEASE_S:.0f} s)")


def first_chunks_then(event: threading.Event, count: int):
    """An on_chunk callback that sets `event` once `count` chunks
    arrived over all the streams sharing it."""
    lock, seen = threading.Lock(), [0]

    def on_chunk(_n):
        with lock:
            seen[0] += 1
            if seen[0] >= count:
                event.set()
    return on_chunk


def test_prefill_worker_sigkilled_mid_prefill_and_transfer(chaos):
    chaos.warm_up()
    pid, _ = chaos.worker("prefill")
    restarts = chaos.restarts("prefill")
    fallbacks = chaos.fallbacks()
    started = threading.Event()
    on_chunk = first_chunks_then(started, 2)
    jobs = [dict(tokens=prompt(chaos.rng, 1500), max_tokens=32, on_chunk=on_chunk) for _ in range(CONCURRENCY)]
    futures, pool = run_streams(chaos, jobs, stagger=0.01)
    # Some prompts have their first token (prefilled, KV held or being
    # pulled), the rest are still being computed.
    assert started.wait(DEADLINE), "no stream started"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    outcomes = collect(futures, pool)
    chaos.restarted("prefill", pid, restarts)
    wait_for("a request through the restarted prefill worker", lambda: served_remotely(chaos), 20)
    recover = time.monotonic() - killed
    note = f"{chaos.fallbacks() - fallbacks:.0f} prompts computed by the decode worker instead"
    chaos.finish("SIGKILL prefill worker mid-prefill/transfer", outcomes, recover, [note])


def test_decode_worker_sigkilled_mid_stream(chaos):
    chaos.warm_up()
    pid, _ = chaos.worker("decode")
    restarts = chaos.restarts("decode")
    streaming = threading.Event()
    on_chunk = first_chunks_then(streaming, CONCURRENCY * 4)
    jobs = [dict(tokens=prompt(chaos.rng, 100), max_tokens=600, on_chunk=on_chunk) for _ in range(CONCURRENCY)]
    futures, pool = run_streams(chaos, jobs)
    assert streaming.wait(DEADLINE), "the streams did not get going"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    outcomes = collect(futures, pool)
    chaos.restarted("decode", pid, restarts)
    wait_for("a request through the restarted decode worker", lambda: served_remotely(chaos), 20)
    recover = time.monotonic() - killed
    chaos.finish("SIGKILL decode worker mid-stream", outcomes, recover)
    assert any(o.kind == "error" and o.detail.startswith("mid-stream") for o in outcomes), \
        "streams cut by the kill end with an error event"


def test_prefill_worker_sigstopped_past_its_lease(chaos):
    chaos.warm_up()
    pid, _ = chaos.worker("prefill")
    restarts = chaos.restarts("prefill")
    fallbacks = chaos.fallbacks()
    started = threading.Event()
    on_chunk = first_chunks_then(started, 2)
    jobs = [dict(tokens=prompt(chaos.rng, 1000), max_tokens=32, on_chunk=on_chunk) for _ in range(CONCURRENCY)]
    futures, pool = run_streams(chaos, jobs, stagger=0.01)
    assert started.wait(DEADLINE), "no stream started"
    os.kill(pid, signal.SIGSTOP)
    try:
        # Past the router's health poll and the KV lease: new requests go
        # around the frozen worker meanwhile.
        time.sleep(LEASE_S + 1.5)
        during = [stream_one(chaos.client(), prompt(chaos.rng, 200), 8) for _ in range(3)]
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    outcomes = collect(futures, pool) + during
    assert all(o.kind == "completed" for o in during), f"requests while frozen: {during}"
    wait_for("a request through the resumed prefill worker", lambda: served_remotely(chaos), 20)
    recover = time.monotonic() - resumed
    assert chaos.restarts("prefill") == restarts, "a stopped worker is not restarted"
    assert chaos.worker("prefill")[0] == pid
    notes = [f"{chaos.fallbacks() - fallbacks:.0f} prompts computed by the decode worker instead",
             "no restart (a stopped worker is not dead)", "3 of the requests were sent while it was stopped"]
    chaos.finish(f"SIGSTOP prefill worker {LEASE_S + 1.5:.1f} s, then SIGCONT", outcomes, recover, notes)


def test_200_clients_hang_up_at_random_points(chaos):
    chaos.warm_up()
    rng = random.Random(200)
    jobs = []
    for _ in range(200):
        # k = 0 hangs up before the first chunk; k past max_tokens reads it all.
        k = rng.choice([0, 1, 2, 5, 10, 20, 40, None])
        jobs.append(dict(tokens=prompt(chaos.rng, rng.randrange(20, 600)), max_tokens=32, close_after=k))
    outcomes = collect(*run_streams(chaos, jobs))
    kinds = Counter(o.kind for o in outcomes)
    assert kinds["closed"] > 50 and kinds["completed"] > 20, kinds
    assert kinds["error"] == 0, Counter(o.detail for o in outcomes if o.kind == "error")
    assert served_remotely(chaos)
    chaos.finish("200 clients hanging up after k chunks", outcomes, None)


def test_afterwards_no_worker_holds_kv_and_none_grew(chaos):
    """Once the scenarios are over: every live worker holds 0 KV blocks and
    none of those seen at a warm-up grew past the bounds (finish asserts)."""
    chaos.warm_up()
    assert len(chaos.live_workers()) == 2, "one prefill and one decode worker, both alive"
    chaos.finish("afterwards: all workers idle", [], None)
    assert all(n == 0 for n in chaos.kv_blocks_in_use().values())


def test_a_worker_dying_while_serve_drains_is_not_restarted(model_dir):
    """SIGTERM to serve while a stream runs, then the prefill worker is
    SIGKILLed and the decode worker SIGTERMed (as a service manager stopping
    the whole group would): the stream still completes, serve exits 0, and
    nothing is restarted."""
    s = start_server(model_dir)
    workers = children(s.proc.pid)
    named = Chaos(s).workers()
    prefill, decode = named["prefill-0"][0], named["decode-1"][0]
    assert sorted([prefill, decode]) == workers, "one prefill and one decode worker"
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=DEADLINE)
    streaming = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(stream_one, client, prompt(random.Random(7), 50), 2000,
                         on_chunk=lambda n: n >= 5 and streaming.set())
    assert streaming.wait(DEADLINE), "the stream did not start"
    os.kill(s.proc.pid, signal.SIGTERM)
    time.sleep(0.2)
    os.kill(prefill, signal.SIGKILL)
    os.kill(decode, signal.SIGTERM)
    assert s.proc.wait(20) == 0, "".join(s.stderr[-20:])
    outcome = future.result(timeout=DEADLINE)
    pool.shutdown()
    assert outcome.kind == "completed", outcome
    log = "".join(s.stderr)
    assert "restarting it" not in log, log
    assert "exited during shutdown" in log, log
    assert all(proc_state(p) in ("", "Z") for p in workers)
