"""Function calling through the official openai client: the whole loop (ask, get calls, run
them, send the results, get the answer), streamed and not, with `required`, a named function
and `auto`; arguments always parse and validate against the function's parameters; the
client's `pydantic_function_tool` and stream helpers; the legacy `functions`; batch lines;
and every bad input refused with 400 naming it, before anything is queued.

SmolLM2-135M is tiny: these check the shape and validity of calls, not whether they are wise.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from devstack import Stack
from hearth.contract import ToolCallEvent
from tests.batches import file_lines, request_line, run_batch, wait_status
from worker.tool_calls import SEPARATOR, CallParser, call_text

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
    ({"tools": [function()], "extra_body": {"conversation": "conv_nobody"}}, "tools", "conversation"),
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


def test_the_openai_agents_sdk_runs_a_function_tool_against_hearth(stack: Stack) -> None:
    """The OpenAI Agents SDK, unchanged, over chat completions: its tool is called with valid
    arguments and its run completes (`required` then stop on the tool's output: SmolLM2 is
    too small to be trusted to decide)."""
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    cities: list[str] = []

    @function_tool
    def get_weather(city: Annotated[str, Field(max_length=30)]) -> str:
        """The weather in a city now."""
        cities.append(city)
        return f"It is sunny in {city}."

    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=120)
    agent = Agent(name="Assistant", instructions="Answer with the weather tool.", tools=[get_weather],
                  model=OpenAIChatCompletionsModel(model="any", openai_client=client),
                  model_settings=ModelSettings(tool_choice="required", max_tokens=60), tool_use_behavior="stop_on_first_tool")
    result = Runner.run_sync(agent, "What is the weather in Paris?")
    assert len(cities) == 1 and isinstance(cities[0], str) and len(cities[0]) <= 30
    assert result.final_output == f"It is sunny in {cities[0]}."


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_several_calls_become_events_whatever_pieces_the_text_comes_in(piece: int) -> None:
    """The worker's reading of its grammar's output: ids, names, then the arguments whole,
    and every token counted once, however the text is cut into tokens."""
    arguments = ['{"city": "Par}is \\" {", "unit": "celsius"}', '{ "zone": "UTC" } ']
    text = SEPARATOR.join(call_text(name, a) for name, a in zip(["get_weather", "get_time"], arguments))
    parser = CallParser("job")
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
