"""SIGTERM: stop accepting, finish what is in flight, exit 0."""

import signal
import threading
import time

import openai

from conftest import MODEL, Server


def test_sigterm_drains_in_flight_requests(model_dir):
    s = Server(model_dir, "--shutdown-timeout", "30")
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    result = {}

    def run():
        result["r"] = c.completions.create(model=MODEL, prompt="x", max_tokens=2000, extra_body={"ignore_eos": True})

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 10
    while s.metric("vllm:num_requests_running") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.proc.poll() is None
    s.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert result["r"].usage.completion_tokens == 2000, "the in-flight request finished"
    assert s.proc.wait(30) == 0
