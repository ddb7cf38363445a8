"""The Responses API through the official openai client, against the real stack: plain,
streamed (event order and numbers), the stream helper, chained turns, background jobs,
resuming a dropped stream, cancel, delete, privacy between users, structured output, and
what Hearth refuses."""

import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import openai
import pytest
from openai.types.responses.response_create_params import ResponseCreateParamsBase
from pydantic import BaseModel

from api.responses.schemas import IGNORED, REFUSED, ResponseCreateRequest
from devstack import INTERACTIVE, ROOT, RedisServer, Stack, add_user, wait_for
from hearth.contract import QueuedEvent
from hearth.sse import read_sse
from tests.batches import file_lines, run_batch, wait_status
from tests.chats import BUSY, NO_END
from tests.sse import stream_in_background

STORY = "Tell me a long story about a dragon."
OPENING = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
CLOSING = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
ENDED = {"completed": "response.completed", "incomplete": "response.incomplete"}


def test_create_answers_a_completed_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model="any", input="Say hello.", instructions="Answer briefly.", max_output_tokens=8,
                                       metadata={"topic": "greeting"})
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.output_text and response.output[0].type == "message"
    assert response.usage is not None and 0 < response.usage.output_tokens <= 8
    assert response.usage.input_tokens > 0 and response.metadata == {"topic": "greeting"}
    if response.status == "incomplete":
        assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    stored = client.responses.retrieve(response.id)
    assert stored.output_text == response.output_text and stored.status == response.status
    items = client.responses.input_items.list(response.id)
    assert [(i.role, i.content[0].text) for i in items.data] == [("user", "Say hello.")]


def test_length_cut_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model="any", input=STORY, max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 3


def check_stream(events: list) -> str:
    """The events are the documented ones, in order, numbered strictly increasing; returns the text."""
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert types == [*OPENING, *["response.output_text.delta"] * len(deltas), *CLOSING, ENDED[events[-1].response.status]]
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0
    text = "".join(d.delta for d in deltas)
    assert deltas and events[-4].text == text and events[-1].response.output_text == text
    return text


def test_streamed_events_come_in_order_with_increasing_numbers(client: openai.OpenAI) -> None:
    with client.responses.create(model="any", input=STORY, max_output_tokens=12, stream=True) as stream:
        events = list(stream)
    check_stream(events)
    assert 0 < events[-1].response.usage.output_tokens <= 12


class Verdict(BaseModel):
    answer: Literal["yes", "no"]


def test_stream_helper_parses_a_structured_answer(client: openai.OpenAI) -> None:
    # A JSON answer ends when its JSON is complete: the response completes well within its budget.
    with client.responses.stream(model="any", input="Is the sky blue? Answer yes or no.", max_output_tokens=40,
                                 text_format=Verdict) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and "".join(deltas) == final.output_text
    assert final.output_parsed is not None and final.output_parsed.answer in ("yes", "no")


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model="any", input="My name is Ada. Remember it.", max_output_tokens=10)
    second = client.responses.create(model="any", input="What is my name?", max_output_tokens=5, previous_response_id=first.id)
    alone = client.responses.create(model="any", input="What is my name?", max_output_tokens=5)
    assert second.previous_response_id == first.id
    # The worker counted the first turn (question and answer) in the second one's prompt.
    assert first.usage and second.usage and alone.usage
    assert second.usage.input_tokens >= alone.usage.input_tokens + first.usage.output_tokens + 5
    # Only the caller's own input is listed as the second response's input.
    assert [i.content[0].text for i in client.responses.input_items.list(second.id).data] == ["What is my name?"]


def test_background_is_queued_then_runs_to_completion(stack: Stack, client: openai.OpenAI) -> None:
    running, started = stream_in_background(stack, BUSY)  # the worker is busy: the response waits
    assert started.wait(120)
    response = client.responses.create(model="any", input="Is the sky blue?", max_output_tokens=40, background=True,
                                       text={"format": {"type": "json_schema", "name": "verdict", "schema": Verdict.model_json_schema()}})
    assert response.status == "queued" and response.background
    assert client.responses.retrieve(response.id).status == "queued"
    seen = []  # its stream, read raw: the queue position rides as SSE comments, which clients skip
    with httpx.stream("GET", f"{stack.base_url}/responses/{response.id}", params={"stream": "true"}, timeout=60) as r:
        for sse in read_sse(r.iter_lines()):
            seen.append(sse)
            if sse.hearth_events() and "freed" not in running:
                running["freed"] = httpx.post(f"{stack.base_url}/jobs/{running['id']}/cancel").raise_for_status()
    waiting = [event for s in seen for event in s.hearth_events()]
    assert isinstance(waiting[0], QueuedEvent) and waiting[0].position == 1
    types = [s.event for s in seen if s.data]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    done = client.responses.retrieve(response.id)
    assert done.status == "completed" and done.output_text and done.usage is not None
    # Its outcome is filed whoever watches, so it outlives the job's log.
    record = f"hearth:resp:local:{response.id.removeprefix('resp_')}"
    wait_for(lambda: stack.redis.hexists(record, "outcome"), 10, "the outcome to be filed")
    assert 0 < stack.redis.ttl(record) <= 30 * 86400  # RESPONSE_RETENTION_S
    stack.redis.delete(f"hearth:job:{response.id.removeprefix('resp_')}", f"hearth:job:{response.id.removeprefix('resp_')}:events")
    kept = client.responses.retrieve(response.id)
    assert (kept.status, kept.output_text, kept.usage) == (done.status, done.output_text, done.usage)
    with client.responses.retrieve(response.id, stream=True, starting_after=0) as stream:
        replayed = list(stream)
    assert replayed[0].type == "response.in_progress" and replayed[-1].response.output_text == done.output_text


def test_conversation_keeps_both_turns(stack: Stack, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    first = client.responses.create(model="any", input="My name is Ada.", max_output_tokens=6, conversation=conv.id)
    assert first.conversation is not None and first.conversation.id == conv.id

    def texts() -> list[tuple[str, str]]:
        return [(i.role, i.content[0].text) for i in client.conversations.items.list(conv.id, order="asc").data]

    wait_for(lambda: len(texts()) == 2, 10, "the answer to be stored in the conversation")
    assert texts() == [("user", "My name is Ada."), ("assistant", first.output_text)]
    second = client.responses.create(model="any", input="What is my name?", max_output_tokens=4, conversation={"id": conv.id})
    alone = client.responses.create(model="any", input="What is my name?", max_output_tokens=4, store=False)
    assert second.usage and alone.usage and first.usage
    assert second.usage.input_tokens >= alone.usage.input_tokens + first.usage.output_tokens + 4


def test_a_conversation_takes_one_answer_at_a_time_from_responses_and_chats(stack: Stack, client: openai.OpenAI) -> None:
    running, started = stream_in_background(stack, BUSY)  # the worker is busy: the first answer waits
    assert started.wait(120)
    conv = client.conversations.create()
    first = client.responses.create(model="any", input="Is the sky blue?", max_output_tokens=8, background=True, conversation=conv.id)
    for turn in (lambda: client.responses.create(model="any", input="And the sea?", max_output_tokens=4, conversation=conv.id),
                 lambda: client.chat.completions.create(model="any", messages=[{"role": "user", "content": "And the sea?"}],
                                                        max_tokens=4, extra_body={"conversation": conv.id})):
        with pytest.raises(openai.ConflictError) as busy:
            turn()
        assert busy.value.code == "conversation_busy"
    httpx.post(f"{stack.base_url}/jobs/{running['id']}/cancel").raise_for_status()
    wait_for(lambda: client.responses.retrieve(first.id).status in ("completed", "incomplete"), 120, "the first answer")
    then = client.responses.create(model="any", input="And the sea?", max_output_tokens=4, conversation=conv.id)
    wait_for(lambda: len(client.conversations.items.list(conv.id).data) == 4, 30, "the second answer to be filed")
    turns = [(i.role, i.content[0].text) for i in client.conversations.items.list(conv.id, order="asc").data]
    assert turns == [("user", "Is the sky blue?"), ("assistant", client.responses.retrieve(first.id).output_text),
                     ("user", "And the sea?"), ("assistant", then.output_text)]


def test_deleting_a_response_on_its_way_frees_its_conversation(stack: Stack, client: openai.OpenAI) -> None:
    running, started = stream_in_background(stack, BUSY)  # the worker is busy: the response waits
    assert started.wait(120)
    conv = client.conversations.create()
    pending = client.responses.create(model="any", input="Is the sky blue?", max_output_tokens=8, background=True, conversation=conv.id)
    assert client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is not None
    client.responses.delete(pending.id)
    assert client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is None
    httpx.post(f"{stack.base_url}/jobs/{running['id']}/cancel").raise_for_status()
    chat = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "And the sea?"}], max_tokens=4,
                                          logit_bias=NO_END, extra_body={"conversation": conv.id})
    wait_for(lambda: client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is None, 30, "the chat's answer to be filed")
    turns = [(i.role, i.content[0].text) for i in client.conversations.items.list(conv.id, order="asc").data]
    assert turns == [("user", "Is the sky blue?"), ("user", "And the sea?"), ("assistant", chat.choices[0].message.content)]


def test_a_dropped_stream_resumes_with_every_delta_once(stack: Stack, client: openai.OpenAI) -> None:
    seen = []
    with client.responses.create(model="any", input=STORY, max_output_tokens=60, temperature=0, stream=True) as stream:
        for event in stream:
            seen.append(event)
            if sum(e.type == "response.output_text.delta" for e in seen) == 3:
                break  # the connection is dropped mid-answer
    response_id = seen[0].response.id
    # A stored response goes on without its client (it is not cancelled).
    with client.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number) as stream:
        rest = list(stream)
    assert rest[0].sequence_number > seen[-1].sequence_number
    events = seen + rest
    text = check_stream(events)
    assert client.responses.retrieve(response_id).output_text == text
    assert rest[-1].response.usage.output_tokens == 60
    # The client's helper resumes too: it reads the whole stream again and skips what was seen.
    with client.responses.stream(response_id=response_id, starting_after=seen[-1].sequence_number) as stream:
        again = list(stream)
    assert [e.sequence_number for e in again] == [e.sequence_number for e in rest]
    assert again[-1].response.output_text == text


def test_tools_and_other_unsupported_features_are_400s(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]}, "input"),
        ({"text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "string", "pattern": "a+"}}}}, "text.format.schema"),
        ({"background": True, "store": False}, "background"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(**{"model": "any", "input": "hi", "max_output_tokens": 4, **extra})
        assert caught.value.body["param"] == param, extra


def test_json_schema_answer_parses(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"], "additionalProperties": False}
    response = client.responses.create(model="any", input="Name a city.", max_output_tokens=40,
                                       text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}})
    assert response.status == "completed"
    assert set(json.loads(response.output_text)) == {"city"}
    assert response.text is not None and response.text.format.type == "json_schema"


def test_every_openai_responses_field_is_honoured_refused_or_ignored() -> None:
    honoured = set(ResponseCreateRequest.model_fields) - set(REFUSED)
    fields = set(ResponseCreateParamsBase.__annotations__) | {"stream"}
    assert fields - honoured - set(REFUSED) - IGNORED == set()
    readme = (ROOT / "README.md").read_text()
    assert [name for name in fields if f"`{name}`" not in readme] == []


def test_a_batch_of_responses_lines(client: openai.OpenAI) -> None:
    def line(custom_id: str, body: dict) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": {"model": "any", "max_output_tokens": 4, **body}}

    lines = [line("plain", {"input": "Say hi.", "metadata": {"n": "1"}}),
             line("messages", {"input": [{"role": "user", "content": [{"type": "input_text", "text": "Count to three."}]}]}),
             line("tools", {"input": "hi", "tools": [{"type": "web_search"}]}),
             line("chained", {"input": "hi", "previous_response_id": "resp_x"})]
    batch = wait_status(client, run_batch(client, lines, endpoint="/v1/responses"), ("completed",))
    assert batch.endpoint == "/v1/responses" and batch.request_counts.completed == 2
    answers = {o["custom_id"]: o["response"]["body"] for o in file_lines(client, batch.output_file_id)}
    for body in answers.values():
        assert body["object"] == "response" and body["status"] in ("completed", "incomplete") and 0 < body["usage"]["output_tokens"] <= 4
        assert body["output"][0]["content"][0]["text"]
    assert answers["plain"]["metadata"] == {"n": "1"}
    errors = {e["custom_id"]: e for e in file_lines(client, batch.error_file_id)}
    assert set(errors) == {"tools", "chained"}


@pytest.fixture(scope="module")
def secured(redis_server: RedisServer, log_dir) -> Iterator[Stack]:
    """An api with accounts and no worker: its responses wait in the queue."""
    s = Stack(redis_server, None, log_dir, AUTH="on")
    s.start_api()
    yield s
    s.stop()


def as_user(stack: Stack, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=add_user(stack, name), max_retries=0, timeout=30)


def test_another_users_response_is_404_and_the_owner_restarts_cancels_and_deletes(secured: Stack) -> None:
    alice, bob = as_user(secured, "alice"), as_user(secured, "bob")
    response = alice.responses.create(model="", input="Hello?", max_output_tokens=4, background=True)
    assert response.status == "queued"
    secured.api.stop()
    secured.start_api()  # stored responses are in Redis: they survive a restart
    for call in (lambda: bob.responses.retrieve(response.id), lambda: bob.responses.cancel(response.id),
                 lambda: bob.responses.delete(response.id), lambda: bob.responses.input_items.list(response.id),
                 lambda: bob.responses.create(model="", input="And?", previous_response_id=response.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert alice.responses.retrieve(response.id).status == "queued"
    cancelled = alice.responses.cancel(response.id)
    assert cancelled.status == "cancelled" and cancelled.output == []
    assert secured.redis.llen(f"rq:queue:{INTERACTIVE.split(':')[0]}:*") == 0
    alice.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(response.id)
