"""Fixtures: real `tandem serve` processes on 127.0.0.1 over the tiny demo
model, and official `openai` clients pointed at them.

The binary is $TANDEM_BIN, else ${CARGO_TARGET_DIR:-target}/debug/tandem
(scripts/test.sh builds it with `cargo nextest run`)."""

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny"
API_KEY = "test-key"


def tandem_bin() -> Path:
    if os.environ.get("TANDEM_BIN"):
        return Path(os.environ["TANDEM_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "tandem"


class Server:
    """One `tandem serve` process; `url` is known once it listens."""

    def __init__(self, model_dir: Path, *extra: str, rag_dir: Path | None = None):
        """RAG is off unless `rag_dir` is given (its --rag-storage-dir): the
        servers of the other tests need no embedding model."""
        binary = tandem_bin()
        if not binary.exists():
            pytest.fail(f"{binary} not found: build it with `cargo build --bin tandem` or set TANDEM_BIN")
        args = [str(binary), "serve", "--model", str(model_dir), "--host", "127.0.0.1",
                "--port", "0", "--served-model-name", MODEL, "--kv-cache-memory", "256MiB", *extra]
        args += ["--no-rag"] if rag_dir is None else ["--rag-storage-dir", str(rag_dir)]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.url = self._wait_for_url()
        self._wait_healthy()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _wait_for_url(self, timeout: float = 60.0) -> str:
        found: list[str] = []

        def read():
            for line in self.proc.stdout:
                m = re.search(r"http://127\.0\.0\.1:\d+", line)
                if m:
                    found.append(m.group(0))
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if not found:
            self.stop()
            pytest.fail("tandem serve did not print its URL:\n" + "".join(self.stderr[-30:]))
        return found[0]

    def _wait_healthy(self, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail("tandem serve never became healthy")

    def get(self, path: str) -> tuple[int, str]:
        return request(self.url + path)

    def post(self, path: str, body) -> tuple[int, str]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return request(self.url + path, data)

    def metric(self, name: str) -> float:
        """Sum of a metric's samples (over its labels)."""
        _, text = self.get("/metrics")
        total, seen = 0.0, False
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
        assert seen, f"{name} missing from /metrics"
        return total

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def request(url: str, data: bytes | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    subprocess.run([str(tandem_bin()), "demo-model", "--size", "tiny", "--out", str(out)],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def server(model_dir):
    s = Server(model_dir)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def pd_server(model_dir):
    """P/D `tandem serve` that prefills every prompt on its prefill worker."""
    s = Server(model_dir, "--pd-threshold", "0")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def colocated_server(model_dir):
    """One engine doing both: what P/D output is compared with."""
    s = Server(model_dir, "--colocated")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def guarded(model_dir):
    """A server with an API key, one sequence at a time and room for one waiting."""
    s = Server(model_dir, "--api-key", API_KEY, "--max-num-seqs", "1", "--max-waiting", "1")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def rag_server(model_dir, tmp_path_factory):
    """RAG on (the default embedding model from .venv), storage in a temp dir."""
    s = Server(model_dir, rag_dir=tmp_path_factory.mktemp("rag-storage"))
    yield s
    s.stop()


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture
def guarded_client(guarded):
    with openai.OpenAI(base_url=guarded.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60) as c:
        yield c


def print_figures(config, title: str, header: list[str], rows: list[list], footer: str):
    """A scenario table as Markdown on the terminal, even under -q (the
    chaos suites print their figures this way for docs/reliability.md)."""
    lines = ["", f"{title} (copy into docs/reliability.md):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines.append(footer)
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


def collect_outcomes(futures, pool, within: float, lost):
    """Every future's result, waiting at most `within` seconds in all; one
    still running by then counts as `lost()`. Cancels what is left."""
    from concurrent.futures import TimeoutError as FutureTimeout
    deadline = time.monotonic() + within
    out = []
    for f in futures:
        try:
            out.append(f.result(timeout=max(0.1, deadline - time.monotonic())))
        except FutureTimeout:
            out.append(lost())
    pool.shutdown(wait=False, cancel_futures=True)
    return out
