"""/v1/chat/completions through the official client."""

from conftest import MODEL

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]},
]


def test_chat_completion(client):
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, user="someone",
                                       extra_body={"ignore_eos": True})
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str)
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 8


def test_max_completion_tokens_wins(client):
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20, max_completion_tokens=4,
                                       extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 4


def test_streamed_chat(client):
    args = dict(model=MODEL, messages=MESSAGES, max_tokens=10, temperature=0.0, extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:-1])
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == whole


def test_chat_n_and_seed(client):
    args = dict(model=MODEL, messages=MESSAGES, max_tokens=8, n=2, seed=7, extra_body={"ignore_eos": True})
    a = client.chat.completions.create(**args)
    b = client.chat.completions.create(**args)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, logprobs=True,
                                       top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for t in content:
        assert t.logprob <= 0
        assert isinstance(t.bytes, list)
        assert len(t.top_logprobs) == 3


def test_stop_in_chat(client):
    args = dict(model=MODEL, messages=MESSAGES, max_tokens=30, temperature=0.0, extra_body={"ignore_eos": True})
    text = client.chat.completions.create(**args).choices[0].message.content
    stop = next((text[i:i + 2] for i in range(2, len(text) - 2) if text[i:i + 2].isascii()
                 and text[i:i + 2].strip()), None)
    assert stop, text
    r = client.chat.completions.create(stop=stop, **args).choices[0]
    assert r.finish_reason == "stop"
    assert r.message.content == text[: text.index(stop)]
