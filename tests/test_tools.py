"""Function calling through the official openai client: the whole loop (ask, get calls, run
them, send the results, get the answer), streamed and not, with `required`, a named function
and `auto`; arguments always parse and validate against the function's parameters; the
client's `pydantic_function_tool` and stream helpers; the legacy `functions`; batch lines;
the Responses API's function tools, calls and outputs (streamed, stored, resumed);
conversations that keep calls and outputs; the bound on parallel calls; the OpenAI Agents
SDK; and every bad input refused with 400 naming it, before anything is queued.

SmolLM2-135M is tiny: these check the shape and validity of calls, not whether they are wise.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from api.conversations.schemas import call_item, chat_history
from api.responses.objects import ResponseEvents
from api.responses.schemas import ResponseCreateRequest
from api.responses.store import StoredResponse
from devstack import Stack
from hearth.contract import DoneEvent, Message, StartedEvent, ToolCall, ToolCallEvent, Usage
from tests.batches import file_lines, request_line, run_batch, wait_status
from worker.tool_calls import HERMES, CallParser

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"], "additionalProperties": False}
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}


def tool(name: str, description: str = "") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": SCHEMAS[name]}}


TOOLS = [tool("get_weather", "The weather in a city now."), tool("get_time", "The time in a time zone.")]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def valid_calls(calls: Any) -> None:
    """Each call has a unique id, names an offered function, and its arguments parse and
    validate against that function's parameters."""
    assert calls
    assert len({c.id for c in calls}) == len(calls)
    for call in calls:
        assert call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def run_tool(call: Any) -> str:
    return json.dumps({"called": call.function.name, "temperature": 21})


def test_the_whole_loop_required_then_the_answer(client: openai.OpenAI) -> None:
    # One call: with parallel calls on, SmolLM2 may go on calling until the token limit, and
    # the answer ends with "length" (the model's choice, not a fault).
    reply = client.chat.completions.create(model="any", messages=ASK, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=120)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    valid_calls(choice.message.tool_calls)
    assert all(c.id.startswith("call_") for c in choice.message.tool_calls)
    results = [{"role": "tool", "tool_call_id": c.id, "content": run_tool(c)} for c in choice.message.tool_calls]
    history = [*ASK, choice.message.model_dump(exclude_none=True), *results]
    final = client.chat.completions.create(model="any", messages=history, tools=TOOLS, tool_choice="none", max_tokens=20)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content
    assert not final.choices[0].message.tool_calls


def test_a_named_function_is_the_one_called(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="any", messages=ASK, tools=TOOLS, max_tokens=120, parallel_tool_calls=False,
                                           tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = reply.choices[0].message.tool_calls
    valid_calls(calls)
    assert {c.function.name for c in calls} == {"get_time"}


def test_without_parallel_calls_there_is_one_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="any", messages=ASK, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=120)
    assert reply.choices[0].finish_reason == "tool_calls"
    assert len(reply.choices[0].message.tool_calls or []) == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_auto_answers_in_text_or_with_valid_calls(client: openai.OpenAI, seed: int) -> None:
    reply = client.chat.completions.create(model="any", messages=ASK, tools=TOOLS, max_tokens=120, seed=seed, parallel_tool_calls=False)
    choice = reply.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        valid_calls(choice.message.tool_calls)
    else:
        assert choice.finish_reason in ("stop", "length")
        assert choice.message.content and not choice.message.content.startswith("<")


def test_streamed_calls_come_as_tool_call_deltas_the_stream_helper_assembles(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="any", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                        max_tokens=120) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()
    deltas = [d for c in chunks for choice in c.choices for d in choice.delta.tool_calls or []]
    first = deltas[0]
    assert first.index == 0 and first.id and first.type == "function" and first.function and first.function.name
    assert len(deltas) > 2  # the arguments come in pieces
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls
    valid_calls(calls)
    assert calls[0].id == first.id
    assert "".join(d.function.arguments or "" for d in deltas if d.index == 0 and d.function) == calls[0].function.arguments


class Weather(BaseModel):
    city: str = Field(max_length=30)
    days: int


def test_the_pydantic_function_tool_helper_gets_parsed_arguments(client: openai.OpenAI) -> None:
    # One call (parallel calls off), with room for the longest one the schema allows: with 60
    # tokens and parallel calls on, a second call could be cut at the limit (finish_reason "length").
    reply = client.chat.completions.parse(model="any", messages=[{"role": "user", "content": "Forecast for Rome?"}],
                                          tools=[openai.pydantic_function_tool(Weather)], tool_choice="required",
                                          parallel_tool_calls=False, max_tokens=200)
    [call] = reply.choices[0].message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, Weather)


def test_legacy_functions_answer_with_function_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="any", messages=ASK, max_tokens=80,
                                           functions=[{"name": "get_weather", "parameters": WEATHER}],
                                           function_call={"name": "get_weather"})
    choice = reply.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call is not None and choice.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), WEATHER)
    # ...and its result, as a `function` message, answers that call.
    history = [*ASK, {"role": "assistant", "content": None, "function_call": choice.message.function_call.model_dump()},
               {"role": "function", "name": "get_weather", "content": "21 degrees"}]
    final = client.chat.completions.create(model="any", messages=history, max_tokens=10)
    assert final.choices[0].message.content


def test_a_batch_line_with_tools_has_its_calls_in_the_output(client: openai.OpenAI) -> None:
    lines = [request_line("call", "What is the weather in Oslo?", 120, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)]
    batch = wait_status(client, run_batch(client, lines), ("completed",), 240)
    [out] = file_lines(client, batch.output_file_id)
    choice = out["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    for call in choice["message"]["tool_calls"]:
        jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])


def queued(stack: Stack) -> tuple[int, int]:
    job_hashes = sum(1 for key in stack.redis.scan_iter("hearth:job:*") if key.count(b":") == 2)
    return job_hashes, sum(int(stack.redis.llen(key)) for key in stack.redis.scan_iter("rq:queue:*"))


def function(name: str = "f", parameters: Any = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **({"parameters": parameters} if parameters is not None else {})}}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"tools": [{"type": kind}]}, "tools.0.type", kind)
    for kind in ("web_search", "file_search", "code_interpreter", "mcp", "custom")
] + [
    ({"tools": [function(parameters={"type": "strng"})]}, "tools.0.function.parameters", "unknown type"),
    ({"tools": [function(parameters={"type": "object", "properties": {"a": {"type": "string", "pattern": "^a"}}})]},
     "tools.0.function.parameters", "pattern"),
    ({"tools": [function(parameters={"type": "string"})]}, "tools.0.function.parameters", "type: object"),
    ({"tools": [function(parameters=nested(40))]}, "tools.0.function.parameters", "nest"),
    ({"tools": [function(parameters={"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(5001)}})]},
     "tools.0.function.parameters", "5000"),
    ({"tools": [function(f"f{i}") for i in range(33)]}, "tools", "at most 32"),
    ({"tools": [function("get weather")]}, "tools.0.function.name", "pattern"),
    ({"tools": [function("f" * 65)]}, "tools.0.function.name", "pattern"),
    ({"tools": [function(), function()]}, "tools.1", "twice"),
    ({"tools": [function()], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice", "'g'"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [function()], "stop": ["x"]}, "stop", "tools"),
    ({"tools": [function()], "response_format": {"type": "json_object"}}, "response_format", "tools"),
    ({"tools": [function()], "functions": [{"name": "g"}]}, "functions", "not both"),
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_nobody", "content": "42"}]}, "messages.1.tool_call_id", "call_nobody"),
])
def test_bad_tool_input_is_400_naming_it_and_nothing_is_queued(
        stack: Stack, client: openai.OpenAI, extra: dict[str, Any], param: str, words: str) -> None:
    before = queued(stack)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**{"model": "any", "messages": ASK, "max_tokens": 5, **extra})
    assert refused.value.param == param
    assert words in refused.value.message
    assert queued(stack) == before


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_the_openai_agents_sdk_runs_a_function_tool_against_hearth(stack: Stack, api: str) -> None:
    """The OpenAI Agents SDK, unchanged, over chat completions and over its default, the
    Responses API (the tool's output goes back as a function_call_output): its tool is called
    with valid arguments and its run completes (`required` then stop on the tool's output:
    SmolLM2 is too small to be trusted to decide)."""
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    cities: list[str] = []

    @function_tool
    def get_weather(city: Annotated[str, Field(max_length=30)]) -> str:
        """The weather in a city now."""
        cities.append(city)
        return f"It is sunny in {city}."

    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=120)
    model = (OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel)(model="any", openai_client=client)
    agent = Agent(name="Assistant", instructions="Answer with the weather tool.", tools=[get_weather], model=model,
                  model_settings=ModelSettings(tool_choice="required", max_tokens=60, parallel_tool_calls=False),
                  tool_use_behavior="stop_on_first_tool")
    result = Runner.run_sync(agent, "What is the weather in Paris?")
    assert len(cities) == 1 and isinstance(cities[0], str) and len(cities[0]) <= 30
    assert result.final_output == f"It is sunny in {cities[0]}."


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_several_calls_become_events_whatever_pieces_the_text_comes_in(piece: int) -> None:
    """The worker's reading of its grammar's output: ids, names, then the arguments whole,
    and every token counted once, however the text is cut into tokens."""
    arguments = ['{"city": "Par}is \\" {", "unit": "celsius"}', '{ "zone": "UTC" } ']
    text = HERMES.calls_text(list(zip(["get_weather", "get_time"], arguments)))
    parser = CallParser("job", HERMES)
    pieces = [text[i:i + piece] for i in range(0, len(text), piece)]
    events = [e for p in pieces for e in parser.feed(p, 1)] + parser.finish()
    assert [(e.id, e.name) for e in events if isinstance(e, ToolCallEvent) and e.id] == [
        ("call_job_0", "get_weather"), ("call_job_1", "get_time")]
    for index, expected in enumerate(arguments):
        joined = "".join(e.arguments for e in events if isinstance(e, ToolCallEvent) and e.index == index)
        assert joined == expected.rstrip()  # a space after the object belongs to the block
    assert sum(e.tokens for e in events) == len(pieces)


def test_a_mistral_template_carries_tools_calls_and_results(make_stack: Callable[..., Stack], mistral_tiny: str) -> None:
    """Mistral Instruct's template knows neither system nor tool roles: the generic format
    reaches it folded into user turns, and the random-weight model's calls are still valid
    (the grammar allows nothing else)."""
    s = make_stack(DEFAULT_MODEL="")
    s.start_api()
    s.start_worker(MODEL_PATH=mistral_tiny, N_CTX="2048")
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=120)
    model = Path(mistral_tiny).stem
    reply = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=150)
    valid_calls(reply.choices[0].message.tool_calls)
    results = [{"role": "tool", "tool_call_id": c.id, "content": run_tool(c)} for c in reply.choices[0].message.tool_calls or []]
    history = [{"role": "system", "content": "Be brief."}, *ASK, reply.choices[0].message.model_dump(exclude_none=True), *results]
    final = client.chat.completions.create(model=model, messages=history, tools=TOOLS, tool_choice="none", max_tokens=5)
    assert final.choices[0].finish_reason in ("stop", "length")  # the template took the history


# The Responses API: function tools have their fields at the top level.
FLAT_TOOLS = [{"type": "function", "name": t["function"]["name"], "description": t["function"]["description"],
               "parameters": t["function"]["parameters"]} for t in TOOLS]
WEATHER_ONLY = FLAT_TOOLS[:1]


def valid_items(items: list[Any]) -> list[Any]:
    """The function_call items of a Responses output, checked as `valid_calls` checks a chat's calls."""
    calls = [i for i in items if i.type == "function_call"]
    assert calls and len({c.call_id for c in calls}) == len(calls) and len({c.id for c in calls}) == len(calls)
    for call in calls:
        assert call.status == "completed" and call.id.startswith("fc_") and call.call_id.startswith("call_")
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    return calls


def test_responses_loop_call_output_then_the_answer(client: openai.OpenAI) -> None:
    response = client.responses.create(model="any", input="What is the weather in Paris?", tools=WEATHER_ONLY, tool_choice="required",
                                       parallel_tool_calls=False, max_output_tokens=120)
    assert response.status == "completed"
    [call] = valid_items(response.output)
    assert response.tools[0].name == "get_weather" and response.tool_choice == "required" and response.parallel_tool_calls is False
    stored = client.responses.retrieve(response.id)
    assert [i.model_dump() for i in stored.output] == [i.model_dump() for i in response.output]
    # The result goes back with previous_response_id; the answer is text.
    final = client.responses.create(model="any", previous_response_id=response.id, tools=WEATHER_ONLY, tool_choice="none",
                                    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees, sunny"}],
                                    max_output_tokens=20)
    assert final.output_text and final.output[0].type == "message"
    [item] = client.responses.input_items.list(final.id).data
    assert item.type == "function_call_output" and item.call_id == call.call_id and item.output == "21 degrees, sunny"
    # ...or the whole exchange goes in `input`, the call as the client got it.
    again = client.responses.create(model="any", tools=WEATHER_ONLY, max_output_tokens=20, tool_choice="none", input=[
        {"role": "user", "content": "What is the weather in Paris?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees, sunny"}])
    assert again.output_text


def test_responses_stream_function_call_events_and_resume(client: openai.OpenAI) -> None:
    with client.responses.stream(model="any", input="What is the weather in Oslo?", tools=FLAT_TOOLS, tool_choice="required",
                                 parallel_tool_calls=False, max_output_tokens=120) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert types == ["response.created", "response.in_progress", "response.output_item.added", *[d.type for d in deltas],
                     "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers))
    [call] = valid_items(final.output)
    assert events[2].item.type == "function_call" and events[2].item.call_id == call.call_id
    assert len(deltas) > 1 and "".join(d.delta for d in deltas) == call.arguments == events[-3].arguments
    # Resumed after any event, from the job's log: nothing repeated, nothing missed.
    for cut in events[1:-1]:
        with client.responses.retrieve(final.id, stream=True, starting_after=cut.sequence_number) as resumed:
            rest = list(resumed)
        seen = [e for e in events if e.sequence_number <= cut.sequence_number]
        joined = "".join(e.delta for e in [*seen, *rest] if e.type == "response.function_call_arguments.delta")
        assert joined == call.arguments, cut.type
        assert rest[-1].type == "response.completed" and all(e.sequence_number > cut.sequence_number for e in rest)


def test_responses_tools_auto_answers_in_text_or_calls(client: openai.OpenAI) -> None:
    with client.responses.stream(model="any", input="Say hello.", tools=FLAT_TOOLS, parallel_tool_calls=False, max_output_tokens=30) as stream:
        events = list(stream)
    response = events[-1].response
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers))
    if response.output and response.output[0].type == "message":
        assert events[2].type == "response.output_item.added" and events[2].item.type == "message"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == response.output_text
    else:
        valid_items(response.output)


@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"tools": [{"type": "web_search"}]}, "tools.0.type", "web_search"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^a"}}}}]},
     "tools.0.parameters", "pattern"),
    ({"tools": [{"type": "function", "name": "get weather"}]}, "tools.0.name", "pattern"),
    ({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}, "tool_choice", "'g'"),
    ({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice", "allowed_tools"),
    ({"input": [{"type": "function_call_output", "call_id": "call_nobody", "output": "42"}]}, "input", "call_nobody"),
])
def test_bad_responses_tool_input_is_400_naming_it(stack: Stack, client: openai.OpenAI, extra: dict[str, Any], param: str, words: str) -> None:
    before = queued(stack)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(**{"model": "any", "input": "hi", "max_output_tokens": 5, **extra})
    assert refused.value.param == param
    assert words in refused.value.message
    assert queued(stack) == before


def item_kinds(client: openai.OpenAI, conv_id: str) -> list[str]:
    return [i.type if i.type != "message" else i.role for i in client.conversations.items.list(conv_id, order="asc").data]


@pytest.mark.parametrize("left_out", [set(), {"id"}], ids=["as-got", "without-item-id"])
def test_a_conversation_keeps_calls_and_outputs_from_responses(client: openai.OpenAI, left_out: set[str]) -> None:
    conv = client.conversations.create()
    response = client.responses.create(model="any", conversation=conv.id, input="What is the weather in Rome?", tools=WEATHER_ONLY,
                                       tool_choice="required", parallel_tool_calls=False, max_output_tokens=120)
    [call] = valid_items(response.output)
    # The call goes back with its output (as the Agents SDK sends it, or without its item id):
    # stored once (regression: without its id, twice).
    final = client.responses.create(model="any", conversation=conv.id, tools=WEATHER_ONLY, tool_choice="none", max_output_tokens=20,
                                    input=[call.model_dump(exclude_none=True, exclude=left_out),
                                           {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees"}])
    assert final.output_text
    kinds = item_kinds(client, conv.id)  # the call was filed when the second turn began
    assert kinds[:3] == ["user", "function_call", "function_call_output"]
    items = client.conversations.items.list(conv.id, order="asc").data
    assert items[1].call_id == call.call_id and items[1].arguments == call.arguments and items[2].output == "18 degrees"
    exported = httpx.get(f"{client.base_url}conversations/{conv.id}/export", params={"format": "json"}, timeout=30).json()
    assert [i["type"] for i in exported["items"]][:3] == ["message", "function_call", "function_call_output"]
    markdown = httpx.get(f"{client.base_url}conversations/{conv.id}/export", timeout=30).text
    assert "get_weather" in markdown and "18 degrees" in markdown


def test_a_chat_turn_in_a_conversation_with_tools(client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    turn = {"conversation": conv.id}
    reply = client.chat.completions.create(model="any", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                           max_tokens=120, extra_body=turn)
    calls = reply.choices[0].message.tool_calls
    valid_calls(calls)
    # The next turn carries what is new only: the results of the stored answer's calls.
    results = [{"role": "tool", "tool_call_id": c.id, "content": run_tool(c)} for c in calls or []]
    final = client.chat.completions.create(model="any", messages=results, tools=TOOLS, tool_choice="none", max_tokens=20, extra_body=turn)
    assert final.choices[0].message.content
    # A result must answer a call of the last answer that is still open: not one nobody made,
    # nor one answered already.
    for call_id in ("call_nobody_made", calls[0].id):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="any", messages=[{"role": "tool", "tool_call_id": call_id, "content": "4"}],
                                           max_tokens=3, extra_body=turn)
        assert refused.value.body["param"] == "messages.0.tool_call_id"
    client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Thanks."}], max_tokens=3, extra_body=turn)
    assert item_kinds(client, conv.id)[:5] == ["user", "function_call", "function_call_output", "assistant", "user"]
    stored = client.conversations.items.list(conv.id, order="asc").data
    assert stored[1].call_id == calls[0].id and stored[2].call_id == calls[0].id


def test_conversation_items_take_function_calls_and_outputs(client: openai.OpenAI) -> None:
    conv = client.conversations.create(items=[
        {"type": "message", "role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "cold"}]}])
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [i.type for i in items] == ["message", "function_call", "function_call_output"]
    assert items[2].output == "cold" and client.conversations.items.retrieve(items[1].id, conversation_id=conv.id).name == "get_weather"
    # The model continues it: the call and its output are in the history it reads.
    final = client.responses.create(model="any", conversation=conv.id, input="And tomorrow?", max_output_tokens=5)
    assert final.output_text
    # An output whose call was deleted is left out of what the model reads: the conversation goes on.
    client.conversations.items.delete(items[1].id, conversation_id=conv.id)
    assert client.responses.create(model="any", conversation=conv.id, input="Thanks.", max_output_tokens=3).output_text


def test_legacy_functions_in_a_batch_line_answer_as_a_chat_does(client: openai.OpenAI) -> None:
    lines = [request_line("legacy", "What is the weather in Oslo?", 120, functions=[{"name": "get_weather", "parameters": WEATHER}],
                          function_call={"name": "get_weather"})]
    batch = wait_status(client, run_batch(client, lines), ("completed",), 240)
    [out] = file_lines(client, batch.output_file_id)
    choice = out["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "function_call" and "tool_calls" not in choice["message"]
    assert choice["message"]["function_call"]["name"] == "get_weather"
    jsonschema.validate(json.loads(choice["message"]["function_call"]["arguments"]), WEATHER)


def test_parallel_calls_end_at_the_bound(make_stack: Callable[..., Stack]) -> None:
    """SmolLM2 with parallel calls on goes on calling: the grammar ends the answer after
    TOOL_MAX_PARALLEL_CALLS calls, so it ends with tool_calls, not at the token limit."""
    s = make_stack()
    s.start_api()
    s.start_worker(TOOL_MAX_PARALLEL_CALLS="3")
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=120)
    counts = []
    for seed in range(1, 9):  # until an answer holds several calls (most hold one)
        reply = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Weather in Paris, Oslo and Rome?"}],
                                               tools=TOOLS, tool_choice="required", max_tokens=600, seed=seed, temperature=1.0)
        assert reply.choices[0].finish_reason == "tool_calls"
        valid_calls(reply.choices[0].message.tool_calls)
        counts.append(len(reply.choices[0].message.tool_calls or []))
        if counts[-1] > 1:
            break
    assert max(counts) <= 3 and max(counts) >= 2, counts  # several calls in one answer, never more than the bound


def test_a_filed_answer_of_calls_replays_as_its_stream_went() -> None:
    """Once a response's log has expired, its stream is replayed from the filed outcome: the
    same events, numbered up to the same closing numbers, so a resumed client misses nothing."""
    record = StoredResponse(job_id="0" * 32, created_at=0, model="m", input=[], tools=[{"type": "function", "name": "f"}])
    calls = [ToolCall(id="call_a", name="f", arguments='{"a": 1}'), ToolCall(id="call_b", name="f", arguments='{"a": 2}')]
    final = DoneEvent(finish_reason="tool_calls", usage=Usage(prompt_tokens=1, completion_tokens=30, total_tokens=31))
    live = ResponseEvents(record)
    logged = [StartedEvent(worker="w")]
    for n, call in enumerate(calls):
        logged += [ToolCallEvent(index=n, id=call.id, name=call.name, tokens=9), ToolCallEvent(index=n, arguments=call.arguments, tokens=4)]
    seen = [e for event in [*logged, ToolCallEvent(index=1, tokens=4), final] for e in live.add(event)]
    replayed = ResponseEvents(record).replay("", final, calls)
    for events in (seen, replayed):
        numbers = [n for n, _ in events]
        assert numbers == sorted(set(numbers))
    assert [e["type"] for _, e in replayed] == [e["type"] for _, e in seen]
    assert [n for n, _ in replayed][-3:] == [n for n, _ in seen][-3:]
    assert replayed[-1][1]["response"]["output"] == seen[-1][1]["response"]["output"]


def test_a_call_sent_back_with_its_output_is_in_the_prompt_once() -> None:
    """A client sends an answer's call back with its output (as the Agents SDK does) to a
    conversation or previous response that holds the call already (regression: the model saw
    the call twice, and a response continuing that one three times)."""
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Rome"}')
    history = [Message(role="user", content="Weather in Rome?"), Message(role="assistant", content="", tool_calls=[call])]
    body = ResponseCreateRequest.model_validate({"model": "any", "tools": WEATHER_ONLY, "input": [
        {"type": "function_call", "id": "fc_0", "call_id": call.id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.id, "output": "18 degrees"}]})

    def shape(messages: list[Message]) -> list[tuple[str, list[str]]]:
        return [(m.role, [c.id for c in m.tool_calls]) for m in messages]

    once = [("user", []), ("assistant", [call.id]), ("tool", [])]
    assert shape(body.to_chat(history).contract_messages()) == once
    record = body.stored("0" * 32, 0, "m", history, [[], []])
    assert shape(record.turns("18 degrees in Rome.", [])) == [*once, ("assistant", [])]
    stored_twice = [call_item(call, "fc_0"), call_item(call, "fc_1")]  # sent back without its item id
    assert shape(chat_history(stored_twice)) == [("assistant", [call.id])]
