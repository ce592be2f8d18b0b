"""/v1/completions through the official client: plain and streamed, n,
stop strings, seeds, logprobs, echo and token-id prompts."""

import re

from conftest import MODEL

GREEDY = {"temperature": 0.0}


def test_completion(client):
    r = client.completions.create(model=MODEL, prompt="The cache", max_tokens=8, extra_body={"ignore_eos": True})
    assert r.id.startswith("cmpl-")
    assert r.object == "text_completion"
    assert r.model == MODEL
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0 and c.finish_reason == "length" and c.text
    assert r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_streamed_completion_matches_unstreamed(client):
    args = dict(model=MODEL, prompt="Streams and", max_tokens=12, extra_body={"ignore_eos": True}, **GREEDY)
    whole = client.completions.create(**args).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == 12
    texts = chunks[:-1]
    assert "".join(c.choices[0].text for c in texts) == whole
    assert texts[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in texts[:-1])
    assert len({c.id for c in chunks}) == 1


def test_n_choices(client):
    r = client.completions.create(model=MODEL, prompt="Two of", max_tokens=6, n=2, seed=1,
                                  extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert r.usage.completion_tokens == 12


def test_list_of_prompts_and_token_ids(client):
    r = client.completions.create(model=MODEL, prompt=["one", "two"], max_tokens=3, extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1]
    ids = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=3, extra_body={"ignore_eos": True})
    assert ids.usage.prompt_tokens == 3


def test_stop_string_cuts_the_text(client):
    args = dict(model=MODEL, prompt="Stop here", max_tokens=40, extra_body={"ignore_eos": True}, **GREEDY)
    text = client.completions.create(**args).choices[0].text
    m = re.search(r"[A-Za-z]{3}", text[3:])
    assert m, f"no ASCII run to stop on in {text!r}"
    stop = m.group(0)
    r = client.completions.create(stop=[stop], **args).choices[0]
    assert r.finish_reason == "stop"
    assert r.text == text[: text.index(stop)]
    assert stop not in r.text
    assert r.model_extra.get("stop_reason") == stop


def test_same_seed_same_text(client):
    args = dict(model=MODEL, prompt="Seeded", max_tokens=16, temperature=1.0, extra_body={"ignore_eos": True})
    a = client.completions.create(seed=42, **args).choices[0].text
    b = client.completions.create(seed=42, **args).choices[0].text
    assert a == b
    others = {client.completions.create(seed=s, **args).choices[0].text for s in (1, 2, 3)}
    assert len(others | {a}) > 1, "different seeds should not all give the same text"


def test_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="Log", max_tokens=5, logprobs=3,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(1 <= len(top) <= 4 for top in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset)


def test_echo_prepends_the_prompt(client):
    r = client.completions.create(model=MODEL, prompt="Echo me", max_tokens=3, echo=True,
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text.startswith("Echo me")
