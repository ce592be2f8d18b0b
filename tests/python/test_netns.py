"""Network faults on the KV path between a prefill and a decode worker, each
in its own network namespace, with the router in the root namespace.

Topology (built afresh for every scenario; names and subnets random):

    root ns: router on 127.0.0.1 --veth--> prefill ns (HTTP from the router)
                                 --veth--> decode ns  (HTTP from the router)
    prefill ns <----------- veth "kv" -----------> decode ns

The workers run UCX over tcp on the "kv" pair alone (UCX_NET_DEVICES), so
taking that pair down cuts the KV pull and nothing else: the router still
reaches both workers and keeps sending them requests. Scenarios: the link
cut for a few seconds (pulls stall, then resume, or fail and the decode
worker computes the prompt itself), the router SIGKILLed mid-stream and
started again over the same workers, and the link throttled to a crawl so
pulls run past their deadline. (tc netem is not in every kernel; a tbf
token bucket and `ip link set down` are.)

Every scenario checks that each request completes or ends with an OpenAI
error object before its deadline (none lost), that what completed is what
a colocated server computes for the same prompt (greedy), that the KV
path serves again afterwards, and that no worker holds KV blocks once the
requests are gone. The figures are printed as one table when the module
ends (for docs/reliability.md).

Each scenario fails with its own exception type (LeakedKv, WrongOutput,
NoRecovery, ...). Three bugs this file found are fixed: a prefill
finishing while its caller was gone left a lease no timer freed
(LeakedKv); one timed-out pull stopped every later pull from that
prefill worker (NoRecovery); and a lease expiring while its pull was
stalled freed blocks the pull still read, so the decode worker decoded
from another prompt's KV (WrongOutput; the decode engine now checks each
pulled block against the prefill worker's checksum and computes the
prompt itself on a mismatch).

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for `ip netns`; without it every
test is skipped with the command's error. TANDEM_NETNS_LOGS=1 prints the
workers' and routers' logs at each scenario's end."""

import json
import os
import random
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import openai
import pytest

from conftest import MODEL, tandem_bin, collect_outcomes, print_figures

# Seconds one request may take end to end, whatever happens to the network.
DEADLINE = 20.0
# A prompt's KV is freed this long after nobody pulled it.
LEASE_S = 2.0
# How long the KV link stays down in the cut scenarios.
CUT_S = 3.0
# The decode worker gives a pull up after this long (the transport's
# default read deadline, DEFAULT_READ_TIMEOUT in transport/src/agent.rs).
PULL_DEADLINE_S = 10.0
# How long the KV path may take to serve again once the fault is gone.
RECOVER_S = 5.0
PROMPT_TOKENS = 1500
MAX_TOKENS = 16
CONCURRENCY = 8
TOKEN = "netns-test-token"
TOKEN_HEADER = "x-tandem-internal-token"
URL = re.compile(r"http://[0-9.]+:\d+")


class LeakedKv(AssertionError):
    """A worker still holds KV blocks past the lease timeout."""


class WrongOutput(AssertionError):
    """A completion differs from the colocated server's (greedy)."""


class NoRecovery(AssertionError):
    """The KV path did not serve again once the fault was gone."""


@dataclass
class Outcome:
    """How one request ended: completed, error (an OpenAI error object;
    `detail` says which), cut (its connection died with the router it went
    through, killed on purpose) or lost (no error object: dropped, cut off
    or past the deadline)."""
    kind: str
    detail: str = ""
    seconds: float = 0.0
    text: str = ""
    prompt: list[int] = field(default_factory=list)
    max_tokens: int = 0


@dataclass
class Row:
    scenario: str
    outcomes: list[Outcome]
    leaked_blocks: int
    recover_s: float | None
    notes: list[str] = field(default_factory=list)


def sh(*args: str) -> subprocess.CompletedProcess:
    """Runs one `ip`/`tc` command; raises with its stderr on failure."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def wait_for(what: str, check, limit: float, error=AssertionError) -> float:
    """Polls `check` until true; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            raise error(f"{what} did not happen within {limit} s")
        time.sleep(0.05)
    return time.monotonic() - start


class Topology:
    """The two namespaces and three veth pairs. `close` deletes the
    namespaces, which deletes the veth ends in them and so their peers in
    the root namespace."""

    def __init__(self):
        sfx = secrets.token_hex(3)
        self.prefill_ns, self.decode_ns = f"tandem-p-{sfx}", f"tandem-d-{sfx}"
        self.created: list[str] = []
        n = random.randrange(0, 84) * 3
        self.root_devs = (f"tnp{sfx}", f"tnd{sfx}")
        self.subnets = (f"10.231.{n + 1}", f"10.231.{n + 2}", f"10.231.{n + 3}")
        self.prefill_ip, self.decode_ip = f"{self.subnets[0]}.2", f"{self.subnets[1]}.2"
        # The KV pair: "kvp" in the prefill namespace, "kvd" in the decode one.
        self.kv_devs = ((self.prefill_ns, "kvp"), (self.decode_ns, "kvd"))

    def build(self):
        """Skips the test when namespaces cannot be made; anything failing
        after that is a real failure."""
        try:
            sh("ip", "netns", "add", self.prefill_ns)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"network namespaces unavailable here: {e}")
        self.created.append(self.prefill_ns)
        sh("ip", "netns", "add", self.decode_ns)
        self.created.append(self.decode_ns)
        self._uplink(self.prefill_ns, self.root_devs[0], self.subnets[0])
        self._uplink(self.decode_ns, self.root_devs[1], self.subnets[1])
        sh("ip", "-n", self.prefill_ns, "link", "add", "kvp", "type", "veth", "peer", "name", "kvd",
           "netns", self.decode_ns)
        sh("ip", "-n", self.prefill_ns, "addr", "add", f"{self.subnets[2]}.1/24", "dev", "kvp")
        sh("ip", "-n", self.decode_ns, "addr", "add", f"{self.subnets[2]}.2/24", "dev", "kvd")
        self.set_kv_link("up")

    def _uplink(self, ns: str, root_dev: str, subnet: str):
        """A veth pair from the root namespace ("rt" inside `ns`)."""
        sh("ip", "link", "add", root_dev, "type", "veth", "peer", "name", "rt", "netns", ns)
        sh("ip", "addr", "add", f"{subnet}.1/24", "dev", root_dev)
        sh("ip", "link", "set", "dev", root_dev, "up")
        sh("ip", "-n", ns, "addr", "add", f"{subnet}.2/24", "dev", "rt")
        sh("ip", "-n", ns, "link", "set", "dev", "rt", "up")
        sh("ip", "-n", ns, "link", "set", "dev", "lo", "up")

    def set_kv_link(self, state: str):
        """Takes the KV pair down or brings it up; up returns once both ends
        have carrier (UCX starts only on devices that are running)."""
        for ns, dev in self.kv_devs:
            sh("ip", "-n", ns, "link", "set", "dev", dev, state)
        if state == "up":
            wait_for("carrier on the KV link", lambda: all(
                sh("ip", "-n", ns, "-br", "link", "show", "dev", dev).stdout.split()[1] == "UP"
                for ns, dev in self.kv_devs), 5)

    def throttle_kv_link(self, on: bool):
        """8 kbit/s on the prefill end of the KV pair, the way the blocks
        travel: a pull of hundreds of KiB cannot finish by its deadline."""
        ns, dev = self.kv_devs[0]
        if on:
            sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", "8kbit", "burst", "1600",
               "latency", "30s")
        else:
            sh("tc", "-n", ns, "qdisc", "del", "dev", dev, "root")

    def close(self):
        """Deletes the root ends first (at once, with their peers): a
        namespace's own devices go away asynchronously after `netns del`."""
        for dev in self.root_devs:
            subprocess.run(["ip", "link", "del", dev], capture_output=True, timeout=10)
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.created.clear()


class Proc:
    """One tandem process (in a namespace, when `ns` is given); `url` is
    the address it printed once listening."""

    def __init__(self, args: list[str], ns: str | None = None, env: dict | None = None):
        cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(tandem_bin()), *args]
        full_env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"), **(env or {}))
        # `ip netns exec` execs the program: the pid is tandem's own.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=full_env)
        self.stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.url = self._wait_for_url()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _wait_for_url(self, timeout: float = 30.0) -> str:
        found: list[str] = []

        def read():
            for line in self.proc.stdout:
                m = URL.search(line)
                if m and not found:
                    found.append(m.group(0))

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.02)
        if not found:
            self.kill()
            pytest.fail(f"`{' '.join(self.proc.args)}` did not print its URL:\n" + "".join(self.stderr[-30:]))
        return found[0]

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def http(url: str, internal: bool = False, timeout: float = 5.0) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={TOKEN_HEADER: TOKEN} if internal else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(base: str, name: str) -> float:
    """Sum of `name`'s samples on `base`'s /metrics."""
    _, text = http(base + "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def worker_status(base: str) -> dict:
    code, body = http(base + "/internal/status", internal=True)
    assert code == 200, f"{base}/internal/status: {code} {body}"
    return json.loads(body)


def blocks_in_use(base: str) -> int:
    """Blocks held by sequences or leases (free cached blocks not counted)."""
    s = worker_status(base)
    return round(s["kv_usage"] * s["kv_arena"]["num_blocks"])


def prompt(rng: random.Random, n: int) -> list[int]:
    """`n` random token ids away from the special ones: no two prompts share
    a prefix, so nothing comes from a prefix cache."""
    return [rng.randrange(10, 2000) for _ in range(n)]


def stream_one(base: str, tokens: list[int], max_tokens: int, on_chunk=None,
               router_killed: threading.Event | None = None) -> Outcome:
    """Streams one greedy completion through the router at `base`. A
    connection error once `router_killed` is set is `cut`, not lost."""
    start = time.monotonic()
    text, finished = "", False

    def cut_or_lost() -> str:
        return "cut" if router_killed is not None and router_killed.is_set() else "lost"

    try:
        with openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0,
                           timeout=openai.Timeout(DEADLINE - 2, connect=3.0)) as client:
            stream = client.completions.create(model=MODEL, prompt=tokens, max_tokens=max_tokens, stream=True,
                                               temperature=0, extra_body={"ignore_eos": True})
            with stream:
                for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].text
                        finished = finished or bool(chunk.choices[0].finish_reason)
                    if on_chunk:
                        on_chunk()
    except openai.APIConnectionError as e:
        return Outcome(cut_or_lost(), type(e).__name__, time.monotonic() - start, prompt=tokens)
    except openai.APIStatusError as e:
        return Outcome("error", f"{e.status_code} {e.type}", time.monotonic() - start, prompt=tokens)
    except openai.APIError as e:
        return Outcome("error", f"mid-stream {e.type}", time.monotonic() - start, prompt=tokens)
    seconds = time.monotonic() - start
    if seconds > DEADLINE:
        return Outcome("lost", "past the deadline", seconds, text, tokens)
    if not finished:
        return Outcome(cut_or_lost(), "ended without finish_reason or error", seconds, text, tokens)
    return Outcome("completed", "", seconds, text, tokens, max_tokens)


def run_streams(jobs: list[dict]) -> tuple[list, ThreadPoolExecutor]:
    """Starts `jobs` (keyword arguments of stream_one) at once."""
    pool = ThreadPoolExecutor(max_workers=len(jobs))
    return [pool.submit(stream_one, **job) for job in jobs], pool


def collect(futures, pool) -> list[Outcome]:
    """Every outcome; a request still running past the deadline is lost."""
    return collect_outcomes(futures, pool, DEADLINE + 3,
                            lambda: Outcome("lost", "still running past the deadline"))


def when_above(read, target: float) -> threading.Event:
    """An event a polling thread sets once `read()` exceeds `target`; the
    thread gives up after DEADLINE."""
    event = threading.Event()

    def poll():
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and not event.is_set():
            try:
                if read() > target:
                    event.set()
            except OSError:
                pass
            time.sleep(0.005)

    threading.Thread(target=poll, daemon=True).start()
    return event


class Cluster:
    """A topology, a prefill and a decode worker in its namespaces, and a
    router in the root namespace; `reference` (a colocated server) gives
    the expected outputs."""

    def __init__(self, model_dir, reference_url: str, rows: list[Row], prefill_args: tuple[str, ...] = ()):
        self.model_dir = model_dir
        self.reference_url = reference_url
        self.rows = rows
        self.prefill_args = prefill_args
        self.topo = Topology()
        self.procs: list[Proc] = []
        self.rng = random.Random(1919)
        self.router: Proc | None = None

    def start(self):
        self.topo.build()
        common = ["--model", str(self.model_dir), "--served-model-name", MODEL, "--port", "0",
                  "--internal-token", TOKEN, "--ucx-transports", "tcp", "--no-rag", "--no-embedder"]
        self.prefill = self._spawn(["worker", "--role", "prefill", "--host", self.topo.prefill_ip,
                                    "--kv-lease-timeout", str(LEASE_S), *common,
                                    *(self.prefill_args or ("--kv-cache-memory", "64MiB"))],
                                   self.topo.prefill_ns, "kvp")
        self.decode = self._spawn(["worker", "--role", "decode", "--host", self.topo.decode_ip,
                                   "--kv-cache-memory", "64MiB", *common], self.topo.decode_ns, "kvd")
        self.start_router()

    def _spawn(self, args: list[str], ns: str | None = None, kv_dev: str | None = None) -> Proc:
        p = Proc(args, ns, {"UCX_NET_DEVICES": kv_dev} if kv_dev else None)
        self.procs.append(p)
        return p

    def start_router(self):
        self.router = self._spawn(["router", "--model", str(self.model_dir), "--served-model-name", MODEL,
                                   "--prefill", self.prefill.url, "--decode", self.decode.url,
                                   "--internal-token", TOKEN, "--host", "127.0.0.1", "--port", "0",
                                   "--pd-threshold", "0", "--no-rag", "--no-embedder"])
        wait_for("a request through the new router, its KV pulled", self.served_remotely, 15)

    def close(self):
        for p in self.procs:
            p.kill()
        self.topo.close()
        if os.environ.get("TANDEM_NETNS_LOGS"):
            for p in self.procs:
                print(f"==== {' '.join(p.proc.args[:6])} ...\n" + "".join(p.stderr[-40:]))

    def pulled(self) -> float:
        return metric(self.decode.url, "tandem_kv_blocks_pulled_total")

    def pull_failures(self) -> float:
        return metric(self.decode.url, "tandem_kv_pull_failures_total")

    def expired(self) -> float:
        return metric(self.prefill.url, "tandem_kv_leases_expired_total")

    def discarded(self) -> float:
        return metric(self.decode.url, "tandem_kv_pulls_discarded_total")

    def served_remotely(self) -> bool:
        """One request prefilled on the prefill worker whose KV the decode
        worker pulled (not computed itself): True when it went that way."""
        try:
            pulled, failed = self.pulled(), self.pull_failures()
            out = stream_one(self.router.url, prompt(self.rng, 64), 4)
            return out.kind == "completed" and self.pulled() > pulled and self.pull_failures() == failed
        except OSError:
            return False

    def recover(self) -> float | None:
        """Seconds until the KV path serves again, None if not in RECOVER_S."""
        try:
            return wait_for("a pull", self.served_remotely, RECOVER_S)
        except AssertionError:
            return None

    def jobs(self, n: int, tokens: int, max_tokens: int, **extra) -> list[dict]:
        return [dict(base=self.router.url, tokens=prompt(self.rng, tokens), max_tokens=max_tokens, **extra)
                for _ in range(n)]

    def kv_blocks_in_use(self) -> dict[str, int]:
        return {"prefill": blocks_in_use(self.prefill.url), "decode": blocks_in_use(self.decode.url)}

    def settle(self) -> tuple[int, float]:
        """Waits (past the lease timeout) for both workers to hold no KV;
        returns the blocks still held and the seconds waited."""
        start = time.monotonic()
        while True:
            held = sum(self.kv_blocks_in_use().values())
            if held == 0 or time.monotonic() - start > LEASE_S + 3:
                return held, time.monotonic() - start
            time.sleep(0.1)

    def wrong_outputs(self, outcomes: list[Outcome]) -> list[int]:
        """Indices of completed outcomes whose text differs from what the
        colocated reference computes for the same prompt (greedy)."""
        wrong = []
        with openai.OpenAI(base_url=self.reference_url + "/v1", api_key="unused", max_retries=0,
                           timeout=DEADLINE) as ref:
            for i, o in enumerate(outcomes):
                if o.kind == "completed":
                    want = ref.completions.create(model=MODEL, prompt=o.prompt, max_tokens=o.max_tokens,
                                                  temperature=0, extra_body={"ignore_eos": True})
                    if want.choices[0].text != o.text:
                        wrong.append(i)
        return wrong

    def finish(self, scenario: str, outcomes: list[Outcome], recover_s: float | None, notes: list[str]):
        """Records the scenario's row, then asserts what every scenario owes:
        nothing lost, no KV held, every completion right, workers alive."""
        leaked, waited = self.settle()
        wrong = self.wrong_outputs(outcomes)
        if leaked:
            notes = notes + [f"prefill/decode hold {self.kv_blocks_in_use()} blocks for good"]
        else:
            notes = notes + [f"KV free {waited:.1f} s after the requests"]
        if wrong:
            notes.append(f"{len(wrong)} completions differ from the colocated server's")
        self.rows.append(Row(scenario, outcomes, leaked, recover_s, notes))
        lost = [o for o in outcomes if o.kind == "lost"]
        assert not lost, f"{scenario}: {len(lost)} requests lost: {Counter(o.detail for o in lost)}"
        for p in (self.prefill, self.decode):
            assert p.proc.poll() is None, "a worker died:\n" + "".join(p.stderr[-20:])
        if leaked:
            raise LeakedKv(f"{scenario}: KV blocks still held {LEASE_S + 3:.0f} s on: {self.kv_blocks_in_use()}; "
                           f"prefill {worker_status(self.prefill.url)}")
        if wrong:
            raise WrongOutput(f"{scenario}: completions {wrong} differ from the colocated server's")


@pytest.fixture(scope="module")
def rows(request):
    """The figures of every scenario, printed as a table at the end."""
    collected: list[Row] = []
    yield collected
    print_table(request.config, collected)


@pytest.fixture
def make_cluster(model_dir, colocated_server, rows):
    """Builds and starts a Cluster (prefill worker flags in place of
    `--kv-cache-memory 64MiB` optional);
    tears every one down after the test, passed or not."""
    made: list[Cluster] = []

    def make(*prefill_args: str) -> Cluster:
        c = Cluster(model_dir, colocated_server.url, rows, prefill_args)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.close()


def print_table(config, rows: list[Row]):
    """The figures, as a Markdown table on the terminal (even under -q)."""
    if not rows:
        return
    table = []
    for r in rows:
        kinds = Counter(o.kind for o in r.outcomes)
        errors = Counter(o.detail for o in r.outcomes if o.kind == "error")
        err = ", ".join(f"{n} {t}" for t, n in errors.most_common()) or "0"
        rec = f"not within {RECOVER_S:.0f} s" if r.recover_s is None else f"{r.recover_s:.1f} s"
        table.append([r.scenario, len(r.outcomes), kinds["completed"], err, kinds["cut"], kinds["lost"],
                      r.leaked_blocks, rec, "; ".join(r.notes)])
    print_figures(config, "network-namespace figures",
                  ["scenario", "sent", "completed", "errored (by type)", "cut with the router", "lost",
                   "leaked KV blocks", "time to recover", "notes"],
                  table,
                  f"(deadline {DEADLINE:.0f} s per request; KV lease {LEASE_S:.0f} s; pull deadline "
                  f"{PULL_DEADLINE_S:.0f} s; {PROMPT_TOKENS}-token prompts unless said; UCX tcp over a veth pair "
                  f"between the workers' namespaces; time to recover: until a request's KV is pulled again)")


def pull_notes(c: Cluster, failures: float, expired: float) -> list[str]:
    """Pulls failed and leases expired since the counts given: with none
    failed, an expired lease is one whose pull completed after it."""
    return [f"{c.pull_failures() - failures:.0f} pulls failed (prompt computed by the decode worker)",
            f"{c.expired() - expired:.0f} leases expired"]


def test_kv_link_cut_after_the_first_pull(make_cluster):
    """The KV link goes down as soon as the first of 8 prompts was pulled,
    for CUT_S (past the lease): the other pulls stall and resume once it
    is back (TCP retransmits), or fail and the decode worker computes the
    prompt. The arena is large, so blocks freed by an expired lease are
    not reused meanwhile (see the next test for when they are)."""
    c = make_cluster()
    failures, expired = c.pull_failures(), c.expired()
    first_pull = when_above(c.pulled, c.pulled())
    futures, pool = run_streams(c.jobs(CONCURRENCY, PROMPT_TOKENS, MAX_TOKENS))
    try:
        assert first_pull.wait(DEADLINE), "no prompt was pulled"
        c.topo.set_kv_link("down")
        time.sleep(CUT_S)
    finally:
        c.topo.set_kv_link("up")
    outcomes = collect(futures, pool)
    recover = c.recover()
    c.finish(f"KV link down {CUT_S:.0f} s from the first pull", outcomes, recover, pull_notes(c, failures, expired))
    if recover is None:
        raise NoRecovery("the KV path did not serve again after the cut")


def test_lease_expiring_during_a_stalled_pull(make_cluster):
    """The KV link is down before prompt A is prefilled, so A's pull stalls;
    A's lease expires (LEASE_S), then prompt B is prefilled into the blocks
    A's lease freed (the prefill arena holds 128 blocks, A and B 94 each);
    the link comes back and A's pull completes. A's completion must still
    be right (or fail over to the decode worker computing A)."""
    c = make_cluster("--kv-cache-memory", "1MiB", "--max-model-len", "2048")
    failures, expired, discarded = c.pull_failures(), c.expired(), c.discarded()
    c.topo.set_kv_link("down")
    try:
        a, a_pool = run_streams(c.jobs(1, PROMPT_TOKENS, MAX_TOKENS))
        wait_for("A's lease to expire", lambda: c.expired() > expired, LEASE_S + 3)
        b, b_pool = run_streams(c.jobs(1, PROMPT_TOKENS, MAX_TOKENS))
        time.sleep(CUT_S - LEASE_S)
    finally:
        c.topo.set_kv_link("up")
    outcomes = collect(a, a_pool) + collect(b, b_pool)
    recover = c.recover()
    caught = c.discarded() - discarded
    c.finish("KV link down, A's lease expires, B reuses its blocks (1 MiB prefill arena)", outcomes, recover,
             pull_notes(c, failures, expired) + [f"{caught:.0f} pulls discarded for a checksum mismatch"])
    if recover is None:
        raise NoRecovery("the KV path did not serve again after the cut")
    # A's KV cannot have arrived intact: its pull failed or was discarded.
    assert caught + c.pull_failures() - failures >= 1, "A's stale pull went unnoticed"


def test_router_sigkilled_mid_stream_and_restarted(make_cluster):
    """The router dies (SIGKILL) while 4 streams decode and 8 long prompts
    have just reached the prefill worker; a new router over the same
    workers serves at once, and the workers free what the dead router's
    requests held within the lease timeout. The prefill worker computes
    the 8 prompts in a step or two, so the kill lands in a step that
    finishes some of them."""
    c = make_cluster("--kv-cache-memory", "64MiB", "--max-num-batched-tokens", str(CONCURRENCY * PROMPT_TOKENS))
    killed = threading.Event()
    lock, chunks, streaming = threading.Lock(), [0], threading.Event()

    def on_chunk():
        with lock:
            chunks[0] += 1
            if chunks[0] >= 4 * 20:
                streaming.set()

    decoding = run_streams(c.jobs(CONCURRENCY // 2, 200, 2000, on_chunk=on_chunk, router_killed=killed))
    assert streaming.wait(DEADLINE), "the streams did not get going"
    def prefills() -> float:
        return metric(c.prefill.url, "tandem_worker_requests_total")

    # Killed as the last long prompt reaches the prefill worker: its engine
    # is then in a step that finishes some of them.
    arrived = when_above(prefills, prefills() + CONCURRENCY - 1)
    prefilling = run_streams(c.jobs(CONCURRENCY, PROMPT_TOKENS, MAX_TOKENS, router_killed=killed))
    assert arrived.wait(DEADLINE), "the long prompts did not reach the prefill worker"
    killed.set()
    c.router.kill(signal.SIGKILL)
    kill_time = time.monotonic()
    cut = collect(*decoding) + collect(*prefilling)
    c.start_router()
    recover = time.monotonic() - kill_time
    after = collect(*run_streams(c.jobs(CONCURRENCY, PROMPT_TOKENS // 3, MAX_TOKENS)))
    assert all(o.kind == "completed" for o in after), Counter(o.detail for o in after)
    notes = [f"{sum(o.kind == 'cut' for o in cut)} of the first {len(cut)} were in flight at the kill "
             f"(4 decoding, 8 prompts of {PROMPT_TOKENS} tokens at the prefill worker); the last {len(after)} "
             f"({PROMPT_TOKENS // 3} tokens) through the new router"]
    c.finish("router SIGKILLed mid-stream and mid-prefill, new router over the same workers", cut + after,
             recover, notes)


def test_kv_link_throttled_past_the_pull_deadline(make_cluster):
    """The KV link crawls (8 kbit/s): every pull runs past its deadline,
    the decode worker gives up and computes the prompt itself; the link
    serves again once the throttle is lifted."""
    c = make_cluster()
    failures, expired = c.pull_failures(), c.expired()
    c.topo.throttle_kv_link(True)
    try:
        outcomes = collect(*run_streams(c.jobs(CONCURRENCY // 2, PROMPT_TOKENS, MAX_TOKENS)))
    finally:
        c.topo.throttle_kv_link(False)
    assert c.pull_failures() - failures >= 1, "the throttled pulls failed at their deadline"
    recover = c.recover()
    c.finish("KV link throttled to 8 kbit/s, pulls past their deadline", outcomes, recover,
             pull_notes(c, failures, expired))
    if recover is None:
        raise NoRecovery(f"no pull succeeded within {RECOVER_S:.0f} s of lifting the throttle "
                         f"({c.pull_failures() - failures:.0f} pulls failed in all)")
