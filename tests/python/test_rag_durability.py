"""`kill -9` loses no acknowledged RAG write (the write-ahead log).

Four threads send 500 writes — index a new document, update or delete one
of their own, create or delete a small index — while the server is
SIGKILLed at four random points and once right after the last write, and
restarted each time on the same storage directory with
`--rag-load-on-start`. A write that got a 200 must be reflected at the end;
one whose connection the kill cut may or may not be, and its document is
left alone afterwards. Each document is written by one thread only, so its
expected state does not depend on how threads interleave."""

import hashlib
import json
import random
import threading
import time
import urllib.error
import urllib.request

from conftest import Server

WRITES = 500
THREADS = 4
RANDOM_KILLS = 4
INDEX = "durable"
WORDS = "lamp river stone cloud amber field quiet north salt ember violet orbit".split()


def send(url: str, method: str, path: str, body=None, timeout: float = 30):
    """(status, parsed body), or (None, None) when the connection failed:
    the server was killed before or while it answered."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, None


class Target:
    """The server now serving; `generation` counts restarts."""

    def __init__(self, model_dir, rag_dir):
        self.model_dir, self.rag_dir = model_dir, rag_dir
        self.cond = threading.Condition()
        self.generation = 0
        self.server = self._start()
        self.kills = 0
        self.restart_s: list[float] = []

    def _start(self) -> Server:
        return Server(self.model_dir, "--rag-load-on-start", rag_dir=self.rag_dir)

    def current(self) -> tuple[str, int]:
        with self.cond:
            return self.server.url, self.generation

    def wait_past(self, generation: int):
        with self.cond:
            self.cond.wait_for(lambda: self.generation > generation, timeout=60)

    def kill_and_restart(self):
        proc = self.server.proc
        proc.kill()
        proc.wait()
        self.kills += 1
        start = time.monotonic()
        server = self._start()
        self.restart_s.append(time.monotonic() - start)
        with self.cond:
            self.server = server
            self.generation += 1
            self.cond.notify_all()


class Ledger:
    """What each document and index may look like at the end: the state
    its last acknowledged write left, plus, after a cut connection, the
    state that write would have left (and then no more writes to it)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = self.acked = self.unknown = self.refuted = 0
        self.docs: dict[str, set] = {}  # doc_id -> acceptable texts (None: absent)
        self.indexes: dict[str, set] = {}  # name -> acceptable presence

    def count(self, status):
        with self.lock:
            self.sent += 1
            if status == 200:
                self.acked += 1
            elif status is None:
                self.unknown += 1


def doc_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Writer(threading.Thread):
    def __init__(self, n: int, target: Target, ledger: Ledger, quota: list, errors: list):
        super().__init__(daemon=True)
        self.n, self.target, self.ledger, self.quota, self.errors = n, target, ledger, quota, errors
        self.rng = random.Random(1000 + n)
        self.live: list[str] = []  # documents this thread may still write
        self.live_indexes: list[str] = []
        self.k = 0

    def take(self) -> bool:
        with self.ledger.lock:
            if self.quota[0] == 0:
                return False
            self.quota[0] -= 1
            return True

    def run(self):
        while self.take():
            url, gen = self.target.current()
            status = self.step(url)
            self.ledger.count(status)
            if status is None:
                self.target.wait_past(gen)

    def text(self) -> str:
        self.k += 1
        words = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(3, 12)))
        return f"writer {self.n} note {self.k}: {words}."

    def step(self, url: str):
        r = self.rng.random()
        if r < 0.06 or (r < 0.1 and not self.live_indexes):
            return self.create_index(url)
        if r < 0.1:
            return self.delete_index(url)
        if r < 0.55 or not self.live:
            return self.index(url)
        if r < 0.8:
            return self.update(url)
        return self.delete(url)

    def settle(self, table: dict, key, status, new, ok: bool, live: list):
        """Records a write's outcome for `key` (its state is `new` if it took)."""
        with self.ledger.lock:
            if status == 200 and ok:
                table[key] = {new}
            elif status is None:
                table.setdefault(key, {None if table is self.ledger.docs else False}).add(new)
                if key in live:
                    live.remove(key)
            else:
                self.errors.append(f"{key}: {status} (refutes an acknowledged write)")
                self.ledger.refuted += 1
                if key in live:
                    live.remove(key)

    def index(self, url):
        text = self.text()
        body = {"index_name": INDEX, "documents": [{"text": text, "metadata": {"writer": self.n}}]}
        status, _ = send(url, "POST", "/index", body)
        self.settle(self.ledger.docs, doc_id(text), status, text, True, self.live)
        if status == 200:
            self.live.append(doc_id(text))
        return status

    def update(self, url):
        target = self.rng.choice(self.live)
        text = self.text()
        body = {"documents": [{"doc_id": target, "text": text, "metadata": {"writer": self.n}}]}
        status, out = send(url, "POST", f"/indexes/{INDEX}/documents", body)
        ok = status == 200 and [d["doc_id"] for d in out["updated_documents"]] == [target]
        self.settle(self.ledger.docs, target, status, text, ok, self.live)
        return status

    def delete(self, url):
        target = self.rng.choice(self.live)
        status, out = send(url, "POST", f"/indexes/{INDEX}/documents/delete", {"doc_ids": [target]})
        ok = status == 200 and out["deleted_doc_ids"] == [target]
        self.settle(self.ledger.docs, target, status, None, ok, self.live)
        if status == 200 and ok:
            self.live.remove(target)
        return status

    def create_index(self, url):
        name = f"scratch-{self.n}-{self.k}"
        body = {"index_name": name, "documents": [{"text": self.text()}]}
        status, _ = send(url, "POST", "/index", body)
        self.settle(self.ledger.indexes, name, status, True, True, self.live_indexes)
        if status == 200:
            self.live_indexes.append(name)
        return status

    def delete_index(self, url):
        name = self.rng.choice(self.live_indexes)
        status, _ = send(url, "DELETE", f"/indexes/{name}")
        self.settle(self.ledger.indexes, name, status, False, True, self.live_indexes)
        if status == 200:
            self.live_indexes.remove(name)
        return status


def stored_documents(url: str) -> dict[str, str]:
    status, names = send(url, "GET", "/indexes")
    assert status == 200, names
    if INDEX not in names:
        return {}
    docs, offset = {}, 0
    while True:
        status, page = send(url, "GET", f"/indexes/{INDEX}/documents?limit=100&offset={offset}&max_text_length=100000")
        assert status == 200, page
        docs.update((d["doc_id"], d["text"]) for d in page["documents"])
        offset += page["count"]
        if offset >= page["total_items"] or page["count"] == 0:
            return docs


def lost_writes(url: str, ledger: Ledger) -> list[str]:
    """Every document and index whose state no acknowledged write allows."""
    docs = stored_documents(url)
    _, names = send(url, "GET", "/indexes")
    lost = [f"doc {i[:12]}: {docs.get(i)!r} not in {ok}" for i, ok in ledger.docs.items() if docs.get(i) not in ok]
    lost += [f"index {n}: present={n in names} not in {ok}" for n, ok in ledger.indexes.items() if (n in names) not in ok]
    lost += [f"doc {i[:12]} was never written" for i in docs if i not in ledger.docs]
    return lost


def test_kill_9_loses_no_acknowledged_write(model_dir, tmp_path):
    target = Target(model_dir, tmp_path / "rag")
    ledger, errors, quota = Ledger(), [], [WRITES]
    try:
        rng = random.Random(7)
        kill_at = sorted(rng.sample(range(40, WRITES - 40), RANDOM_KILLS))
        writers = [Writer(n, target, ledger, quota, errors) for n in range(THREADS)]
        start = time.monotonic()
        for w in writers:
            w.start()
        for point in kill_at:
            while ledger.sent + ledger.unknown < point and any(w.is_alive() for w in writers):
                time.sleep(0.002)
            target.kill_and_restart()
        for w in writers:
            w.join(120)
        # The last writes were acknowledged an instant ago: kill once more.
        target.kill_and_restart()
        lost = lost_writes(target.server.url, ledger)
        # A graceful stop compacts every log into a snapshot: same state.
        target.server.stop()
        target.server = Server(model_dir, "--rag-load-on-start", rag_dir=tmp_path / "rag")
        lost_after_sigterm = lost_writes(target.server.url, ledger)
        print(f"\nrag durability: sent={ledger.sent} acknowledged={ledger.acked} "
              f"cut_by_a_kill={ledger.unknown} lost={len(lost) + ledger.refuted} kills={target.kills} "
              f"documents={len(ledger.docs)} indexes={len(ledger.indexes)} "
              f"restart_s={max(target.restart_s):.2f} max, total {time.monotonic() - start:.1f}s")
        assert ledger.sent == WRITES
        assert not errors, errors[:5]
        assert not lost, lost[:5]
        assert not lost_after_sigterm, lost_after_sigterm[:5]
        assert ledger.unknown > 0, "no kill landed while a write was in flight"
    finally:
        target.server.stop()
