"""Chat completions with `index_name` through the official `openai`
client (extra_body), streamed and not, as KAITO RAGEngine users send them."""

import uuid

import openai
import pytest

from conftest import MODEL

DOCS = [
    "Lighthouses use Fresnel lenses, invented by Augustin-Jean Fresnel in 1822, to focus their beam far out to sea.",
    "Sourdough starters are cultures of wild yeast and lactic acid bacteria fed with flour and water.",
]
# KAITO's budget is ratio x min(max_tokens, context - query - 150): a
# handful of tokens would leave no room for any chunk.
MAX_TOKENS = 200
QUESTION = "Who invented the lens that lighthouses use to focus their beam?"


@pytest.fixture(scope="module")
def kb(rag_server):
    name = "oa-" + uuid.uuid4().hex[:8]
    status, body = rag_server.post("/index", {"index_name": name, "documents": [{"text": t} for t in DOCS]})
    assert status == 200, body
    return name


@pytest.fixture
def rag_client(rag_server):
    with openai.OpenAI(base_url=rag_server.url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def messages(question=QUESTION):
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}]


def test_chat_with_index_name_returns_source_nodes(rag_client, kb):
    resp = rag_client.chat.completions.create(
        model=MODEL, messages=messages(), max_tokens=MAX_TOKENS, extra_body={"index_name": kb, "context_token_ratio": 0.5})
    assert resp.choices[0].message.role == "assistant"
    nodes = resp.model_extra["source_nodes"]
    assert nodes and nodes[0]["text"] == DOCS[0]
    assert set(nodes[0]) >= {"doc_id", "node_id", "text", "score", "metadata"}
    # The retrieved context is in the prompt the model saw.
    plain = rag_client.chat.completions.create(model=MODEL, messages=messages(), max_tokens=MAX_TOKENS)
    assert resp.usage.prompt_tokens > plain.usage.prompt_tokens
    assert "source_nodes" not in (plain.model_extra or {})


def test_streamed_chat_with_index_name_sends_sources_first(rag_client, kb):
    stream = rag_client.chat.completions.create(
        model=MODEL, messages=messages(), max_tokens=MAX_TOKENS, stream=True, extra_body={"index_name": kb})
    chunks = list(stream)
    first = chunks[0].model_extra or {}
    assert first["source_nodes"][0]["text"] == DOCS[0]
    assert all("source_nodes" not in (c.model_extra or {}) for c in chunks[1:])
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_nothing_relevant_gives_a_plain_answer_with_null_sources(rag_client, kb):
    resp = rag_client.chat.completions.create(
        model=MODEL, messages=messages("zqx vvb kkp"), max_tokens=MAX_TOKENS, extra_body={"index_name": kb})
    assert "source_nodes" in resp.model_extra and resp.model_extra["source_nodes"] is None


def test_kaito_refusals(rag_client, kb):
    with pytest.raises(openai.NotFoundError):
        rag_client.chat.completions.create(model=MODEL, messages=messages(), extra_body={"index_name": "no-such"})
    with pytest.raises(openai.BadRequestError):
        rag_client.chat.completions.create(
            model=MODEL, messages=messages(), extra_body={"index_name": kb, "context_token_ratio": 0.9})
    with pytest.raises(openai.BadRequestError):
        rag_client.chat.completions.create(
            model=MODEL, messages=messages(), extra_body={"index_name": kb},
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
