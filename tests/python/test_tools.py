"""Tool calling through the official openai client: `tools` with every
`tool_choice`, `parallel_tool_calls`, streamed tool-call deltas, a round
trip with the tool's result, the legacy `functions` / `function_call`, the
400s, and prefill/decode disaggregation.

The demo model's weights are random: it never chooses to call a tool on
its own merits, so the checks rest on what `tool_choice: "required"` and a
named function guarantee (a grammar makes the output a call of a declared
function with valid arguments), never on which call a sensible model would
make. Every parameter is bounded so a random model finishes its call."""

import json

import jsonschema
import openai
import pytest

from conftest import MODEL, Server

MAX_TOKENS = 400
ASK = [{"role": "user", "content": "What is the weather in Paris for the next three days?"}]

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": -100, "maximum": 100},
                   "b": {"type": "integer", "minimum": -100, "maximum": 100}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
LOOKUP = {
    "type": "object",
    "properties": {"query": {"type": "string", "maxLength": 10},
                   "limit": {"type": "integer", "minimum": 1, "maximum": 5},
                   "exact": {"type": "boolean"}},
    "required": ["query"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "add": ADD, "lookup": LOOKUP}
TOOLS = [{"type": "function", "function": {"name": name, "description": f"The {name} tool.", "parameters": schema}}
         for name, schema in SCHEMAS.items()]


# --- helpers ----------------------------------------------------------------

def client_of(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def named(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def error_of(exc_info) -> dict:
    return exc_info.value.response.json()["error"]


def assert_valid_call(name: str, arguments: str, allowed=SCHEMAS):
    """A declared function, with arguments that are JSON valid against its
    parameters."""
    assert name in allowed, name
    jsonschema.validate(json.loads(arguments), allowed[name])


def assert_tool_calls(choice, allowed=SCHEMAS) -> list[tuple[str, str]]:
    """The choice is a tool-call answer; returns its (name, arguments)."""
    msg = choice.message
    assert choice.finish_reason == "tool_calls"
    assert msg.content is None
    assert msg.tool_calls, "at least one call"
    for call in msg.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert_valid_call(call.function.name, call.function.arguments, allowed)
    assert len({c.id for c in msg.tool_calls}) == len(msg.tool_calls), "ids are unique"
    return [(c.function.name, c.function.arguments) for c in msg.tool_calls]


def create(c, **kw):
    kw = {"messages": ASK, "tools": TOOLS, "max_tokens": MAX_TOKENS, "temperature": 0, **kw}
    return c.chat.completions.create(model=MODEL, **kw)


def stream_calls(c, **kw):
    """Streams one choice; returns (calls, finish_reason, content) where
    calls[index] = {"id", "type", "name", "pieces"}, checking on the way
    that the first chunk carries the role and each call's first delta its
    id, type and name."""
    calls: dict[int, dict] = {}
    finish, content, first = None, "", True
    for chunk in create(c, stream=True, **kw):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if first:
            assert choice.delta.role == "assistant"
            first = False
        content += choice.delta.content or ""
        finish = choice.finish_reason or finish
        for d in choice.delta.tool_calls or []:
            if d.index not in calls:
                assert d.id and d.id.startswith("call_") and d.type == "function" and d.function.name, d
                calls[d.index] = {"id": d.id, "type": d.type, "name": d.function.name, "pieces": []}
            if d.function and d.function.arguments:
                calls[d.index]["pieces"].append(d.function.arguments)
    assert sorted(calls) == list(range(len(calls))), "indexes count the calls from 0"
    return calls, finish, content


def joined(calls: dict) -> list[tuple[str, str]]:
    return [(calls[i]["name"], "".join(calls[i]["pieces"])) for i in sorted(calls)]


# --- tool_choice ------------------------------------------------------------

def test_required_makes_valid_tool_calls(client):
    r = create(client, tool_choice="required")
    assert_tool_calls(r.choices[0])
    assert r.usage.completion_tokens > 0


def test_named_function_is_the_one_called(client):
    for name in SCHEMAS:
        r = create(client, tool_choice=named(name))
        calls = assert_tool_calls(r.choices[0])
        assert {n for n, _ in calls} == {name}


def test_parallel_tool_calls_false_makes_exactly_one(client):
    r = create(client, tool_choice="required", parallel_tool_calls=False, temperature=1.0, seed=21, n=3)
    for choice in r.choices:
        assert len(assert_tool_calls(choice)) == 1


def test_parallel_by_default_makes_one_or_more(client):
    r = create(client, tool_choice="required", temperature=1.0, seed=4, n=4, max_tokens=1500)
    for choice in r.choices:
        assert len(assert_tool_calls(choice)) >= 1


def test_none_answers_in_text(client):
    r = create(client, tool_choice="none", max_tokens=30)
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert isinstance(choice.message.content, str)
    assert not choice.message.tool_calls


def test_auto_answer_is_well_formed(client):
    """Without a grammar the random model writes text; whatever it writes,
    the answer is either text or calls, with the finish reason to match."""
    for seed in range(3):
        choice = create(client, temperature=1.0, seed=seed, max_tokens=60).choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
        else:
            assert isinstance(choice.message.content, str)
            assert choice.finish_reason in ("stop", "length")


# --- streaming --------------------------------------------------------------

@pytest.mark.parametrize("tool_choice", ["required", named("get_weather"), named("lookup")],
                         ids=["required", "weather", "lookup"])
def test_streamed_calls_equal_unstreamed(client, tool_choice):
    whole = create(client, tool_choice=tool_choice)
    expected = assert_tool_calls(whole.choices[0])
    calls, finish, content = stream_calls(client, tool_choice=tool_choice)
    assert finish == "tool_calls"
    assert content == ""
    assert joined(calls) == expected


def test_arguments_stream_in_several_pieces(client):
    calls, finish, _ = stream_calls(client, tool_choice=named("get_weather"))
    assert finish == "tool_calls" and len(calls) == 1
    assert len(calls[0]["pieces"]) > 1, calls[0]["pieces"]
    assert_valid_call("get_weather", "".join(calls[0]["pieces"]))


# --- round trip -------------------------------------------------------------

def history_with_result(c) -> list[dict]:
    """[user, assistant with the calls as returned, one tool result per call]."""
    msg = create(c, tool_choice=named("get_weather")).choices[0].message
    calls = [{"id": t.id, "type": "function", "function": {"name": t.function.name, "arguments": t.function.arguments}}
             for t in msg.tool_calls]
    results = [{"role": "tool", "tool_call_id": t.id, "content": json.dumps({"temp_c": 18, "sky": "clear"})}
               for t in msg.tool_calls]
    return [*ASK, {"role": "assistant", "content": None, "tool_calls": calls}, *results]


def test_tool_result_round_trip(client):
    messages = history_with_result(client)
    choice = create(client, messages=messages, tool_choice="none", max_tokens=30).choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert isinstance(choice.message.content, str)
    assert not choice.message.tool_calls
    calls, finish, content = stream_calls(client, messages=messages, tool_choice="none", max_tokens=30)
    assert finish in ("stop", "length") and not calls
    assert content == choice.message.content, "greedy: streamed equals unstreamed"


def test_round_trip_can_call_again(client):
    """After a tool result the grammar still holds for the next call."""
    choice = create(client, messages=history_with_result(client), tool_choice=named("add")).choices[0]
    assert [n for n, _ in assert_tool_calls(choice)] == ["add"]


# --- legacy functions -------------------------------------------------------

FUNCTIONS = [t["function"] for t in TOOLS]


def test_legacy_function_call_named(client):
    for name in ("add", "get_weather"):
        r = client.chat.completions.create(model=MODEL, messages=ASK, functions=FUNCTIONS,
                                           function_call={"name": name}, max_tokens=MAX_TOKENS, temperature=0)
        choice = r.choices[0]
        assert choice.finish_reason == "function_call"
        assert choice.message.function_call.name == name
        assert_valid_call(name, choice.message.function_call.arguments)


def test_legacy_function_message_is_accepted(client):
    messages = [*ASK, {"role": "assistant", "content": None,
                       "function_call": {"name": "add", "arguments": '{"a": 1, "b": 2}'}},
                {"role": "function", "name": "add", "content": "3"}]
    r = client.chat.completions.create(model=MODEL, messages=messages, functions=FUNCTIONS,
                                       max_tokens=20, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length", "function_call")


# --- errors -----------------------------------------------------------------

def test_unknown_named_function_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        create(client, tool_choice=named("no_such_function"))
    assert error_of(e)["param"] == "tool_choice"


def test_required_without_tools_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ASK, tool_choice="required", max_tokens=10)
    assert error_of(e)["param"] == "tool_choice"


def test_invalid_parameters_schema_is_400_naming_the_tool(client):
    bad = [{"type": "function", "function": {"name": "broken", "parameters":
                                             {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}]
    with pytest.raises(openai.BadRequestError) as e:
        create(client, tools=[*TOOLS, *bad], tool_choice="auto")
    assert (error_of(e)["param"] or "").startswith("tools"), error_of(e)


def test_required_with_a_response_format_is_400(client):
    with pytest.raises(openai.BadRequestError):
        create(client, tool_choice="required",
               response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}})


# --- prefill/decode disaggregation ------------------------------------------

def named_call(server, stream: bool) -> list[tuple[str, str]]:
    """The greedy named call's (name, arguments); ids differ per request."""
    c = client_of(server)
    if stream:
        calls, finish, _ = stream_calls(c, tool_choice=named("get_weather"))
        assert finish == "tool_calls"
        return joined(calls)
    return assert_tool_calls(create(c, tool_choice=named("get_weather")).choices[0])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_call_through_pd_matches_colocated(pd_server, colocated_server, stream):
    pd = named_call(pd_server, stream)
    assert [n for n, _ in pd] == ["get_weather"]
    assert pd == named_call(colocated_server, stream)
