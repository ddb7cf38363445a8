"""`response_format` through the official openai client: answers are JSON that parses and
validates against the caller's schema, streamed, non-streamed and in batches, also when a
batch line is paused and resumed; what Hearth cannot enforce or does not implement is a 400
naming it, before anything is queued."""

import json
import uuid
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from pydantic import BaseModel, Field

from api.chat.schemas import IGNORED, REFUSED, ChatCompletionRequest
from devstack import ROOT, Stack, wait_for
from tests.batches import file_lines, pause_a_line, request_line, run_batch, wait_status

PARAM = "response_format.json_schema.schema"


def short(n: int = 30) -> dict[str, Any]:
    return {"type": "string", "maxLength": n}


def obj(required: bool = True, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties) if required else [],
            "additionalProperties": False}


POINT = obj(x={"type": "integer"}, y={"type": "integer"})
# Prompts and schemas of many shapes; strings and arrays bounded, so that every answer ends
# well within max_tokens.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("Describe a person.", obj(name=short(), age={"type": "integer"})),
    ("Tell me about Paris.", obj(name=short(), country=short(), population={"type": "integer"})),
    ("What colour is the sky?", obj(colour={"enum": ["red", "green", "blue", "grey"]})),
    ("Is water wet?", obj(answer={"type": "boolean"})),
    ("Name three fruits.", obj(fruits={"type": "array", "items": short(20), "minItems": 3, "maxItems": 3})),
    ("Recommend a book.", obj(title=short(40), author=short(), year={"type": "integer"})),
    ("What is the weather like?", obj(temperature={"type": "number"}, unit={"enum": ["C", "F"]}, sunny={"type": "boolean"})),
    ("When is the next holiday?", obj(date={"type": "string", "format": "date"})),
    ("Schedule a meeting.", obj(when={"type": "string", "format": "date-time"}, topic=short())),
    ("Describe a family and their pets.", obj(owner=obj(name=short(20), pets={
        "type": "array", "items": obj(kind={"enum": ["cat", "dog", "fish"]}, name=short(15)), "maxItems": 2}))),
    ("Do you have a nickname?", obj(nickname={"anyOf": [short(20), {"type": "null"}]})),
    ("Give me a line from one point to another.", {**obj(start={"$ref": "#/$defs/Point"}, end={"$ref": "#/$defs/Point"}),
                                                  "$defs": {"Point": POINT}}),
    ("Pick a quotation.", obj(quote={"enum": ['say "hi"', "back\\slash", "tab\there", "new\nline", "café ☕"]})),
    ("Greet me.", obj(kind={"const": "greeting"}, text=short())),
    ("A name and a number, please.", {"type": "array", "prefixItems": [short(15), {"type": "integer"}]}),
    ("Some lucky numbers?", {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 5}),
    ("Give me an identifier.", obj(id={"type": "string", "format": "uuid"}, label=short(20))),
    ("How many moons does Mars have?", obj(value={"type": ["integer", "null"]})),
    ("Describe a pet.", {"allOf": [{"$ref": "#/$defs/Pet"}], "$defs": {"Pet": obj(name=short(20), legs={"type": "integer"})}}),
    ("Tell me a short fact.", {**obj(required=False, fact=short(), source=short(20)), "required": ["fact"],
                               "title": "Fact", "description": "A fact and maybe where it comes from."}),
]


def schema_format(schema: dict[str, Any], name: str = "answer") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def ask(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


@pytest.mark.parametrize(("prompt", "schema"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_a_json_schema_answer_parses_and_validates(client: openai.OpenAI, prompt: str, schema: dict[str, Any]) -> None:
    reply = client.chat.completions.create(model="any", messages=ask(prompt), max_tokens=250,
                                           response_format=schema_format(schema))
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content or ""), schema)


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)


def test_the_clients_parse_helper_gets_a_parsed_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.parse(model="any", messages=ask("Name a city."), max_tokens=150,
                                          response_format=City)
    assert isinstance(reply.choices[0].message.parsed, City)


def test_json_object_mode_answers_a_json_object(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="any", messages=ask("Describe a cat in JSON."), max_tokens=300,
                                           response_format={"type": "json_object"}, seed=3)
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_a_streamed_json_schema_answer_parses_and_validates(client: openai.OpenAI) -> None:
    schema = obj(name=short(), hobbies={"type": "array", "items": short(20), "minItems": 2, "maxItems": 3})
    stream = client.chat.completions.create(model="any", messages=ask("Describe a person."), max_tokens=250,
                                            response_format=schema_format(schema), stream=True)
    parts, finish = [], None
    for chunk in stream:
        parts.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads("".join(parts)), schema)


def test_max_tokens_cuts_json_short_with_finish_reason_length(client: openai.OpenAI) -> None:
    schema = obj(story={"type": "string", "maxLength": 500})
    reply = client.chat.completions.create(model="any", messages=ask("Tell a story."), max_tokens=8,
                                           response_format=schema_format(schema))
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    with pytest.raises(json.JSONDecodeError):  # incomplete, as at OpenAI
        json.loads(reply.choices[0].message.content or "")


def queued(stack: Stack) -> tuple[int, int]:
    """Job hashes, and entries in every RQ queue."""
    job_hashes = sum(1 for key in stack.redis.scan_iter("hearth:job:*") if key.count(b":") == 2)
    return job_hashes, sum(int(stack.redis.llen(key)) for key in stack.redis.scan_iter("rq:queue:*"))


@pytest.mark.parametrize(("construct", "schema"), [
    ("patternProperties", {"type": "object", "patternProperties": {"^x": {"type": "string"}}}),
    ("pattern", obj(code={"type": "string", "pattern": "^[A-Z]{3}$"})),
    ("email", obj(mail={"type": "string", "format": "email"})),
    ("only local references", obj(a={"$ref": "https://example.com/schema.json"})),
    ("`if`", {"if": {"type": "object"}, "then": {"required": ["a"]}}),
    ("`not`", obj(a={"not": {"type": "null"}})),
    ("minimum", obj(age={"type": "integer", "minimum": 0})),
    ("uniqueItems", {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}),
    ("'b' is not in `properties`", {**obj(a=short()), "required": ["b"]}),
    ("nest at most", json.loads('{"type": "array", "items": ' * 40 + "{}" + "}" * 40)),
])
def test_a_schema_hearth_cannot_enforce_is_400_and_nothing_is_queued(
        stack: Stack, client: openai.OpenAI, construct: str, schema: dict[str, Any]) -> None:
    before = queued(stack)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="any", messages=ask("hi"), max_tokens=5,
                                       response_format=schema_format(schema))
    assert refused.value.param == PARAM
    assert construct in refused.value.message
    assert queued(stack) == before


@pytest.mark.parametrize(("extra", "param"), [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
     "messages.0.content"),
    ({"response_format": schema_format(obj(a=short())), "stop": ["}"]}, "stop"),
])
def test_fields_hearth_does_not_implement_are_400_naming_them(
        stack: Stack, client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    before = queued(stack)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**{"model": "any", "messages": ask("hi"), "max_tokens": 5, **extra})
    assert refused.value.param == param
    assert queued(stack) == before


def test_values_that_ask_for_nothing_pass(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="any", messages=ask("hi"), max_tokens=3, n=1, tools=[], tool_choice="none", logprobs=False,
        modalities=["text"], parallel_tool_calls=False, store=False, reasoning_effort="low", response_format={"type": "text"},
        prediction={"type": "content", "content": "hello"})
    assert reply.choices[0].message.content is not None


def test_every_openai_chat_field_is_honoured_refused_or_ignored() -> None:
    honoured = set(ChatCompletionRequest.model_fields) - set(REFUSED) - IGNORED
    fields = set(CompletionCreateParamsBase.__annotations__)
    assert fields - honoured - set(REFUSED) - IGNORED == set()
    readme = (ROOT / "README.md").read_text()
    assert [name for name in fields if f"`{name}`" not in readme] == []


def heartbeat_field(stack: Stack, name: str) -> int:
    [key] = list(stack.redis.scan_iter("hearth:worker:*"))
    return int(stack.redis.hget(key, name) or 0)


def test_a_grammar_is_built_once_per_distinct_schema(stack: Stack, client: openai.OpenAI) -> None:
    unique = uuid.uuid4().hex  # a schema this worker has not seen before
    schema = obj(word={"enum": [unique, "other"]})
    before = heartbeat_field(stack, "grammars_built")
    for variant in (schema, {**schema, "title": "Same constraints"}, schema):
        client.chat.completions.create(model="any", messages=ask("Pick one."), max_tokens=60,
                                       response_format=schema_format(variant))
    client.chat.completions.create(model="any", messages=ask("Pick one."), max_tokens=60,
                                   response_format=schema_format(obj(word={"enum": [unique]})))
    wait_for(lambda: heartbeat_field(stack, "grammars_built") >= before + 2, 10, "the heartbeat to count the grammars")
    assert heartbeat_field(stack, "grammars_built") == before + 2


def test_a_batch_line_with_response_format_answers_json(stack: Stack, client: openai.OpenAI) -> None:
    schema = obj(city=short(), country=short())
    lines = [request_line("good", "Name a city.", 150, response_format=schema_format(schema)),
             request_line("bad", "Name a city.", 150, response_format=schema_format({"type": "object", "not": {}}))]
    batch = wait_status(client, run_batch(client, lines), ("completed",), 240)
    [out] = file_lines(client, batch.output_file_id)
    jsonschema.validate(json.loads(out["response"]["body"]["choices"][0]["message"]["content"]), schema)
    [error] = batch.errors.data
    assert error.line == 2 and error.param == f"body.{PARAM}"


def test_a_paused_json_batch_line_resumes_in_its_grammar(make_stack) -> None:
    """A paused line's next attempt feeds its answer so far to the new grammar sampler: without
    that the resumed answer would start its JSON again. (Not compared with an uninterrupted
    run's answer: llama.cpp's logits for the same tokens differ in the last bits with how they
    were evaluated, at once or after a kept or restored state, which can turn a greedy choice.)"""
    s = make_stack(EVENT_INTERVAL_MS="0")
    s.start_worker()
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=120)
    schema = obj(fruits={"type": "array", "items": short(20), "minItems": 15, "maxItems": 15})
    body = request_line("json", "List fruits.", 400, temperature=0, seed=7, response_format=schema_format(schema))["body"]
    batch_id = run_batch(client, [{"custom_id": "json", "method": "POST", "url": "/v1/chat/completions", "body": body}])

    run = pause_a_line(s, client, batch_id, min_events=15)
    events = [(e.event, json.loads(e.data)) for e in run.followed]
    paused_at = next(i for i, (kind, _) in enumerate(events) if kind == "requeued")
    assert [data["reason"] for kind, data in events if kind == "requeued"] == ["paused"]
    sent = "".join(data["text"] for kind, data in events[:paused_at] if kind == "token")
    [out] = file_lines(client, run.batch.output_file_id)
    content = out["response"]["body"]["choices"][0]["message"]["content"]
    assert sent.startswith('{"fruits": ["') and content.startswith(sent) and len(content) > len(sent)
    jsonschema.validate(json.loads(content), schema)
