"""Models, health, version, tokenize/detokenize and metrics."""

import json

import openai
import pytest

from conftest import MODEL


def test_models_list(client, server, model_dir):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    card = models.data[0]
    assert card.object == "model"
    assert card.owned_by == "tandem"
    assert card.created > 0
    raw = json.loads(server.get("/v1/models")[1])["data"][0]
    assert raw["root"] == str(model_dir)
    assert raw["max_model_len"] == 4096
    assert client.models.retrieve(MODEL).id == MODEL


def test_health_and_version(server):
    status, body = server.get("/health")
    assert (status, json.loads(body)) == (200, {"status": "Healthy"})
    status, body = server.get("/version")
    assert status == 200 and json.loads(body)["version"]


def test_tokenize_roundtrip(server):
    status, body = server.post("/tokenize", {"prompt": "Hello world", "return_token_strs": True})
    assert status == 200
    tok = json.loads(body)
    assert tok["count"] == len(tok["tokens"]) == len(tok["token_strs"])
    assert tok["max_model_len"] == 4096
    status, body = server.post("/detokenize", {"tokens": tok["tokens"]})
    assert status == 200 and json.loads(body)["prompt"].endswith("Hello world")


def test_tokenize_chat_matches_chat_usage(client, server):
    messages = [{"role": "user", "content": "How many tokens?"}]
    count = json.loads(server.post("/tokenize", {"messages": messages})[1])["count"]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    assert r.usage.prompt_tokens == count


def test_metrics_use_vllm_names_with_model_label(client, server):
    before = server.metric("vllm:generation_tokens_total")
    client.completions.create(model=MODEL, prompt="count me", max_tokens=5, extra_body={"ignore_eos": True})
    _, text = server.get("/metrics")
    for name in ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:time_per_output_token_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket", "vllm:request_success_total",
                 "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"]:
        assert f'{name}{{model_name="{MODEL}"' in text, name
    assert server.metric("vllm:generation_tokens_total") >= before + 5
    assert server.metric("vllm:prompt_tokens_total") > 0


def test_disconnect_aborts_and_frees_kv(client, server):
    aborted = server.metric('vllm:request_success_total{model_name="tiny",finished_reason="abort"}')
    stream = client.completions.create(model=MODEL, prompt="a long one", max_tokens=4000, stream=True,
                                       extra_body={"ignore_eos": True})
    next(iter(stream))
    stream.close()
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.metric("vllm:num_requests_running") == 0 and server.metric("vllm:kv_cache_usage_perc") == 0:
            break
        time.sleep(0.05)
    assert server.metric("vllm:num_requests_running") == 0
    assert server.metric("vllm:kv_cache_usage_perc") == 0
    assert server.metric('vllm:request_success_total{model_name="tiny",finished_reason="abort"}') == aborted + 1
