"""Guided decoding (structured outputs) through the official openai client:
`response_format` and vLLM's `guided_json`, `guided_regex`, `guided_choice`
and `guided_grammar`, on both endpoints, streamed and not, n > 1, through
prefill/decode disaggregation, and their 400s.

The demo model's weights are random, so its text is gibberish: every check
rests on what the grammar guarantees (the output parses, validates, matches),
never on what the text says. Schemas bound every string, number and array so
a random model cannot run out of tokens before the grammar completes."""

import json
import random
import re
from enum import Enum
from typing import Literal, Optional

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from conftest import MODEL, Server

MAX_TOKENS = 400
HELLO = [{"role": "user", "content": "Describe an order as JSON."}]

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 9999},
        "status": {"enum": ["open", "paid", "shipped"]},
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12}, "vip": {"type": "boolean"}},
            "required": ["name", "vip"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string", "maxLength": 8},
                               "qty": {"type": "integer", "minimum": 1, "maximum": 20}},
                "required": ["sku", "qty"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["id", "status", "customer", "items"],
    "additionalProperties": False,
}


# --- helpers ----------------------------------------------------------------

def client_of(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def error_of(exc_info) -> dict:
    return exc_info.value.response.json()["error"]


def assert_valid(text: str, schema: dict):
    """The output is JSON text valid against `schema`."""
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


def json_schema_format(schema: dict, name: str = "order") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def stream_completion(c, **kw) -> dict[int, tuple[str, str]]:
    """Per choice index: (concatenated text deltas, finish_reason)."""
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in c.completions.create(model=MODEL, stream=True, **kw):
        for ch in chunk.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.text or "")
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    return {i: (texts[i], finishes.get(i)) for i in texts}


def stream_chat(c, **kw) -> dict[int, tuple[str, str]]:
    """Per choice index: (concatenated content deltas, finish_reason)."""
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in c.chat.completions.create(model=MODEL, stream=True, **kw):
        for ch in chunk.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    return {i: (texts[i], finishes.get(i)) for i in texts}


# --- response_format on chat -------------------------------------------------

class Color(str, Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Part(BaseModel):
    label: str = Field(max_length=10)
    count: int = Field(ge=0, le=99)


class Order(BaseModel):
    name: str = Field(max_length=16)
    color: Color
    size: Literal["s", "m", "l"]
    rush: bool
    parts: list[Part] = Field(max_length=3)
    note: Optional[str] = Field(default=None, max_length=10)


def test_parse_returns_a_validated_pydantic_instance(client):
    """`chat.completions.parse` sends the model's strict JSON schema and
    parses the reply back into the model: it raises if the output does not
    validate, so getting an instance is the check."""
    r = client.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Order,
                                      max_tokens=MAX_TOKENS, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    order = choice.message.parsed
    assert isinstance(order, Order)
    assert order == Order.model_validate_json(choice.message.content)
    assert len(order.parts) <= 3 and all(0 <= p.count <= 99 for p in order.parts)


def test_json_object_mode_gives_an_object(client):
    r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=MAX_TOKENS, temperature=0,
                                       response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_json_schema_chat_n2_streamed_equals_unstreamed(client):
    kw = dict(messages=HELLO, max_tokens=MAX_TOKENS, temperature=0, n=2,
              response_format=json_schema_format(ORDER_SCHEMA))
    r = client.chat.completions.create(model=MODEL, **kw)
    streamed = stream_chat(client, **kw)
    assert sorted(streamed) == [0, 1]
    for ch in r.choices:
        assert ch.finish_reason == "stop"
        assert_valid(ch.message.content, ORDER_SCHEMA)
        assert streamed[ch.index] == (ch.message.content, "stop")


# --- vLLM's guided_* fields on completions ----------------------------------

def test_guided_json_n3_every_choice_validates(client):
    r = client.completions.create(model=MODEL, prompt="An order:", max_tokens=MAX_TOKENS, temperature=1.0,
                                  seed=7, n=3, extra_body={"guided_json": ORDER_SCHEMA})
    assert len(r.choices) == 3
    for ch in r.choices:
        assert ch.finish_reason == "stop"
        assert_valid(ch.text, ORDER_SCHEMA)


def test_guided_json_as_a_string_is_the_same_schema(client):
    kw = dict(model=MODEL, prompt="An order:", max_tokens=MAX_TOKENS, temperature=0)
    as_object = client.completions.create(**kw, extra_body={"guided_json": ORDER_SCHEMA})
    as_text = client.completions.create(**kw, extra_body={"guided_json": json.dumps(ORDER_SCHEMA)})
    assert as_text.choices[0].text == as_object.choices[0].text
    assert_valid(as_text.choices[0].text, ORDER_SCHEMA)


def test_guided_json_streamed_equals_unstreamed_and_validates(client):
    kw = dict(model=MODEL, prompt="An order:", max_tokens=MAX_TOKENS, temperature=0,
              extra_body={"guided_json": ORDER_SCHEMA})
    whole = client.completions.create(**kw).choices[0].text
    text, finish = stream_completion(client, **{k: v for k, v in kw.items() if k != "model"})[0]
    assert (text, finish) == (whole, "stop")
    assert_valid(text, ORDER_SCHEMA)


def test_guided_regex_full_matches(client):
    pattern = r"[0-9]{3}-[a-z]{2,4}"
    r = client.completions.create(model=MODEL, prompt="A code:", max_tokens=MAX_TOKENS, temperature=1.0,
                                  seed=3, n=3, extra_body={"guided_regex": pattern})
    for ch in r.choices:
        assert ch.finish_reason == "stop"
        assert re.fullmatch(pattern, ch.text), ch.text
    streamed = stream_completion(client, prompt="A code:", max_tokens=MAX_TOKENS, temperature=0,
                                 extra_body={"guided_regex": pattern})
    assert re.fullmatch(pattern, streamed[0][0]) and streamed[0][1] == "stop"


def test_guided_choice_picks_from_the_list(client):
    choices = ["alpha", "beta", "gamma"]
    r = client.completions.create(model=MODEL, prompt="Pick one:", max_tokens=MAX_TOKENS, temperature=1.0,
                                  seed=11, n=4, extra_body={"guided_choice": choices})
    assert len(r.choices) == 4
    for ch in r.choices:
        assert ch.text in choices and ch.finish_reason == "stop"
    chat = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=MAX_TOKENS, temperature=0,
                                          extra_body={"guided_choice": choices})
    assert chat.choices[0].message.content in choices


def test_non_ascii_constraints_hold(client):
    """Characters of several UTF-8 bytes: a byte-level vocabulary spells
    them a byte per token, so the grammar forces a partial character (the
    lead byte every choice shares) that must still map to the right token."""
    words = ["héllo", "ñandú", "日本語"]
    r = client.completions.create(model=MODEL, prompt="Pick:", max_tokens=MAX_TOKENS, temperature=1.0,
                                  seed=2, n=3, extra_body={"guided_choice": words})
    assert [ch.text in words for ch in r.choices] == [True] * 3, [ch.text for ch in r.choices]
    pattern = "[é-ü]{2,3}"
    r = client.completions.create(model=MODEL, prompt="Pick:", max_tokens=MAX_TOKENS, temperature=0,
                                  extra_body={"guided_regex": pattern})
    assert re.fullmatch(pattern, r.choices[0].text), r.choices[0].text


def test_guided_grammar_lark(client):
    """A Lark grammar in llguidance's dialect: alternatives, a rule, and
    regex terminals, each bounded."""
    grammar = '\n'.join([
        'start: greeting " " pair',
        'greeting: "hi" | "yo"',
        'pair: "(" NUM "," WORD ")"',
        'NUM: /[0-9]{1,3}/',
        'WORD: /[a-z]{1,6}/',
    ])
    r = client.completions.create(model=MODEL, prompt="Say:", max_tokens=MAX_TOKENS, temperature=1.0,
                                  seed=5, n=3, extra_body={"guided_grammar": grammar})
    for ch in r.choices:
        assert ch.finish_reason == "stop"
        assert re.fullmatch(r"(hi|yo) \([0-9]{1,3},[a-z]{1,6}\)", ch.text), ch.text


# --- errors -----------------------------------------------------------------

BAD_SCHEMA = {"type": "object", "properties": {"a": {"type": "nonsense"}}}


@pytest.mark.parametrize("body,param", [
    ({"guided_regex": "(("}, "guided_regex"),
    ({"guided_grammar": "start: undefined_rule"}, "guided_grammar"),
    ({"guided_json": BAD_SCHEMA}, "guided_json"),
    ({"guided_json": "{not json"}, "guided_json"),
    ({"guided_choice": []}, "guided_choice"),
    ({"response_format": json_schema_format(BAD_SCHEMA)}, "response_format"),
], ids=["regex", "grammar", "json", "json-text", "choice", "response-format"])
def test_invalid_constraint_is_400_naming_its_field(client, body, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=MAX_TOKENS, extra_body=body)
    assert (error_of(e)["param"] or "").startswith(param), error_of(e)


def test_invalid_constraint_on_completions_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", max_tokens=MAX_TOKENS,
                                  extra_body={"guided_regex": "[unclosed"})
    assert error_of(e)["param"] == "guided_regex"


def test_two_constraints_at_once_are_refused(client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="x", max_tokens=MAX_TOKENS,
                                  extra_body={"guided_regex": "a+", "guided_choice": ["a"]})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=MAX_TOKENS,
                                       response_format={"type": "json_object"},
                                       extra_body={"guided_json": ORDER_SCHEMA})


def test_unknown_response_format_type_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=MAX_TOKENS,
                                       response_format={"type": "xml"})
    assert error_of(e)["param"] == "response_format.type"


# --- prefill/decode disaggregation ------------------------------------------

def guided_outputs(server, stream: bool) -> list[str]:
    """The same greedy guided requests (a json_schema chat, a regex
    completion); the prefill worker samples the first token under the
    grammar and the decode worker must replay it into its own guide."""
    c = client_of(server)
    chat_kw = dict(messages=HELLO, max_tokens=MAX_TOKENS, temperature=0,
                   response_format=json_schema_format(ORDER_SCHEMA))
    regex_kw = dict(prompt="A code:", max_tokens=MAX_TOKENS, temperature=0,
                    extra_body={"guided_regex": r"[a-z]{2,5}-[0-9]{2,4}"})
    if stream:
        chat_text, chat_finish = stream_chat(c, **chat_kw)[0]
        regex_text, regex_finish = stream_completion(c, **regex_kw)[0]
    else:
        ch = c.chat.completions.create(model=MODEL, **chat_kw).choices[0]
        chat_text, chat_finish = ch.message.content, ch.finish_reason
        co = c.completions.create(model=MODEL, **regex_kw).choices[0]
        regex_text, regex_finish = co.text, co.finish_reason
    assert chat_finish == regex_finish == "stop"
    assert_valid(chat_text, ORDER_SCHEMA)
    assert re.fullmatch(r"[a-z]{2,5}-[0-9]{2,4}", regex_text), regex_text
    return [chat_text, regex_text]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_guided_through_pd_matches_colocated(pd_server, colocated_server, stream):
    assert guided_outputs(pd_server, stream) == guided_outputs(colocated_server, stream)


# --- property test: random schemas ------------------------------------------

NAMES = ["id", "name", "tag", "ok", "size", "kind", "mode", "rank", "flag", "code"]
ENUM_VALUES = ["red", "green", "blue", "a b", 7, -3, True, None]


def random_leaf(rng: random.Random) -> dict:
    kind = rng.choice(["string", "integer", "boolean", "enum"])
    if kind == "string":
        schema = {"type": "string", "maxLength": rng.randint(1, 8)}
        if rng.random() < 0.3:
            schema["minLength"] = rng.randint(0, schema["maxLength"])
        return schema
    if kind == "integer":
        low = rng.randint(-100, 100)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 500)}
    if kind == "boolean":
        return {"type": "boolean"}
    return {"enum": rng.sample(ENUM_VALUES, rng.randint(1, 4))}


def random_value(rng: random.Random, nested: bool) -> dict:
    roll = rng.random()
    if roll < 0.25:
        return {"type": "array", "items": random_leaf(rng), "maxItems": rng.randint(0, 3)}
    if roll < 0.4 and not nested:
        return random_object(rng, nested=True)
    return random_leaf(rng)


def random_object(rng: random.Random, nested: bool = False) -> dict:
    """1-4 properties, some required, nothing else allowed: without
    `additionalProperties: false` a random model could add keys forever."""
    names = rng.sample(NAMES, rng.randint(1, 4))
    props = {n: random_value(rng, nested) for n in names}
    required = [n for n in names if rng.random() < 0.6]
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


@pytest.mark.parametrize("seed", range(25))
def test_random_schema_outputs_validate(client, seed):
    """Even seeds through /v1/completions' guided_json, odd ones through
    chat's response_format; sampled at temperature 1 with a seed."""
    schema = random_object(random.Random(seed))
    kw = dict(max_tokens=1000, temperature=1.0, seed=seed)
    if seed % 2 == 0:
        ch = client.completions.create(model=MODEL, prompt="JSON:", extra_body={"guided_json": schema},
                                       **kw).choices[0]
        text = ch.text
    else:
        ch = client.chat.completions.create(model=MODEL, messages=HELLO, **kw,
                                            response_format=json_schema_format(schema, f"s{seed}")).choices[0]
        text = ch.message.content
    assert ch.finish_reason == "stop", (schema, text)
    try:
        assert_valid(text, schema)
    except (ValueError, jsonschema.ValidationError) as e:
        pytest.fail(f"schema {json.dumps(schema)}\noutput {text!r}\n{e}")
