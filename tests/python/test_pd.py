"""The official openai client through prefill/decode disaggregation: `tandem
serve` (router + prefill + decode worker processes) with every prompt
prefilled remotely, compared with a colocated server."""

import openai
import pytest

from conftest import MODEL, Server


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat(server, stream: bool) -> str:
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Tell me about prefix caches and KV transfer. " * 4}]
    c = client(server)
    if not stream:
        r = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                      extra_body={"ignore_eos": True})
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == 12
        return r.choices[0].message.content
    text, finish = "", None
    for chunk in c.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                           stream=True, extra_body={"ignore_eos": True}):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "length"
    return text


def test_pd_chat_matches_colocated_streamed_and_not(pd_server, colocated_server):
    before = pd_server.metric('tandem_router_requests_total{model_name="tiny",path="prefill_then_decode"}')
    for stream in (False, True):
        assert chat(pd_server, stream) == chat(colocated_server, stream)
    after = pd_server.metric('tandem_router_requests_total{model_name="tiny",path="prefill_then_decode"}')
    assert after - before == 2, "both requests went through the prefill worker"


def test_pd_seeded_sampling_matches_colocated(pd_server, colocated_server):
    def sample(server):
        r = client(server).completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10,
                                              temperature=0.9, seed=1234, extra_body={"ignore_eos": True})
        return r.choices[0].text
    assert sample(pd_server) == sample(colocated_server)


def test_pd_time_split_is_on_the_routers_metrics(pd_server):
    """A disaggregated request's time to first token is split where it was
    spent: the prefill worker's queue and prefill, the decode worker's KV
    pull and first step, as histograms on the router's /metrics."""
    names = ["vllm:request_queue_time_seconds", "vllm:request_prefill_time_seconds",
             "tandem_request_kv_transfer_seconds", "tandem_request_first_decode_step_seconds"]
    before = {n: (pd_server.metric(n + "_count"), pd_server.metric(n + "_sum")) for n in names}
    chat(pd_server, stream=False)
    for n in names:
        count, total = pd_server.metric(n + "_count"), pd_server.metric(n + "_sum")
        assert count - before[n][0] == 1, n
        assert total - before[n][1] >= 0, n
    # Prefill computed the whole prompt (a 40-token chat) on the prefill
    # worker: its time is real, not the router's whole TTFT relabelled.
    prefill = pd_server.metric("vllm:request_prefill_time_seconds_sum") - before[names[1]][1]
    ttft = pd_server.metric("vllm:time_to_first_token_seconds_sum")
    assert 0 < prefill <= ttft


@pytest.fixture(scope="module")
def staged_server(model_dir):
    s = Server(model_dir, "--pd-threshold", "0", "--pd-stage-tokens", "1024")
    yield s
    s.stop()


def test_long_prompts_are_prefilled_in_stages_and_pulled_meanwhile(staged_server, colocated_server):
    """A 4,088-token prompt (the demo model's context is 4,096) goes to the
    prefill worker as prefixes of 1,024, 2,048 and 3,072 tokens and then
    whole; the decode worker pulls each prefix while the next computes, so
    the pull after the prefill moves only the last stage's blocks and ends
    within that stage's (one chunk's) prefill time of the prefill's end."""
    prompt = [(i * 7919) % 300 + 10 for i in range(4088)]

    def complete(server):
        r = client(server).completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0,
                                              extra_body={"ignore_eos": True})
        return r.choices[0].text

    stages = "tandem_router_pd_stages_total"
    names = ["tandem_request_kv_transfer_seconds", "vllm:request_prefill_time_seconds"]
    before = {n: staged_server.metric(n + "_sum") for n in names}
    stages_before = staged_server.metric(stages)
    assert complete(staged_server) == complete(colocated_server)
    assert staged_server.metric(stages) - stages_before == 3
    pull, prefill = (staged_server.metric(n + "_sum") - before[n] for n in names)
    print(f"last-stage pull {pull * 1e3:.2f} ms, last-stage prefill {prefill * 1e3:.1f} ms")
    assert 0 < pull < prefill
