"""Every error case raises the matching openai exception, with an OpenAI
error object behind it."""

import json

import openai
import pytest

from conftest import API_KEY, MODEL


def body_of(exc):
    return exc.value.response.json()["error"]


def test_invalid_field_is_bad_request_naming_it(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", temperature=-1)
    assert body_of(e)["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], top_logprobs=30,
                                       logprobs=True)
    assert body_of(e)["param"] == "top_logprobs"


def test_too_long_names_both_numbers(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x y z", max_tokens=5000)
    err = body_of(e)
    assert err["param"] == "max_tokens" and err["code"] == "context_length_exceeded"
    assert "4096" in err["message"] and "5000" in err["message"]


def test_echo_with_logprobs_is_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", echo=True, logprobs=1)
    assert body_of(e)["param"] == "echo"


def test_malformed_json_is_400(server):
    status, body = server.post("/v1/completions", b'{"model": "tiny", "prompt": ')
    assert status == 400
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "malformed JSON" in err["message"]


def test_unknown_model_and_route_are_not_found(client, server):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="x")
    assert body_of(e)["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    status, body = server.get("/v1/no/such/route")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


def test_missing_or_wrong_key_is_authentication_error(guarded):
    for key in ["wrong-key", ""]:
        c = openai.OpenAI(base_url=guarded.url + "/v1", api_key=key or "x", max_retries=0,
                          default_headers={} if key else {"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as e:
            c.models.list()
        assert body_of(e)["code"] == "invalid_api_key"
    ok = openai.OpenAI(base_url=guarded.url + "/v1", api_key=API_KEY, max_retries=0)
    assert ok.models.list().data[0].id == MODEL
    assert guarded.get("/health")[0] == 200, "health stays open for probes"


def test_full_waiting_queue_is_rate_limited(guarded_client):
    # --max-num-seqs 1 --max-waiting 1: one running, one waiting, the next is refused.
    long = dict(model=MODEL, prompt="x", max_tokens=4000, stream=True, extra_body={"ignore_eos": True})
    running = guarded_client.completions.create(**long)
    next(iter(running))
    waiting = guarded_client.completions.create(**long)
    try:
        with pytest.raises(openai.RateLimitError) as e:
            guarded_client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        assert int(e.value.response.headers["retry-after"]) >= 1
        assert body_of(e)["type"] == "rate_limit_error"
    finally:
        running.close()
        waiting.close()
