"""Chat turns stored in a conversation by the api itself (`conversation` on a chat completion)."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from api.accounts.users import LOCAL_USER
from api.conversations.store import CONVERSATION_KEY
from api.settings import ApiSettings
from devstack import INTERACTIVE, Stack, add_user, wait_for
from tests.chats import BUSY, NO_END
from tests.sse import job_events, stream_in_background


def items(client: openai.OpenAI, conv_id: str) -> list[Any]:
    return list(client.conversations.items.list(conv_id, order="asc"))


def streamed_turn(conv_id: str, question: str, max_tokens: int) -> dict[str, Any]:
    """A streamed chat turn stored in `conv_id`, its answer never ended early by the model."""
    return {"model": "any", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "logit_bias": NO_END, "stream": True, "conversation": conv_id}


def test_a_turn_is_stored_whole_once_even_when_the_client_leaves_mid_answer(stack: Stack, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    body = streamed_turn(conv.id, "Tell me about boats.", 60)
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, timeout=60) as r:
        job_id = r.headers["X-Job-Id"]
        for line in r.iter_lines():
            if '"content":' in line and '"content": ""' not in line:
                break  # the first words arrived: leave, as a reloading browser does
    wait_for(lambda: len(items(client, conv.id)) == 2, 120, "the answer to be stored")
    question, answer = items(client, conv.id)
    said = "".join(json.loads(e.data)["text"] for e in job_events(stack.base_url, job_id) if e.event == "token")
    assert (question.role, question.content[0].text) == ("user", "Tell me about boats.")
    assert answer.role == "assistant" and answer.status == "completed" and answer.content[0].text == said
    assert job_events(stack.base_url, job_id)[-1].event == "done"  # leaving did not cancel it
    assert len(items(client, conv.id)) == 2  # filed once


def test_the_conversation_names_its_answer_in_progress_and_takes_no_second_question_meanwhile(stack: Stack, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    body = streamed_turn(conv.id, "Tell me about ships.", 40)
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, timeout=60) as r:
        job_id = r.headers["X-Job-Id"]
        assert client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] == job_id
        with pytest.raises(openai.ConflictError, match="still being written") as busy:
            client.chat.completions.create(model="any", messages=[{"role": "user", "content": "And boats?"}],
                                           extra_body={"conversation": conv.id})
        assert busy.value.body["param"] == "conversation"
    wait_for(lambda: client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is None, 120, "the answer to be filed")
    assert [i.role for i in items(client, conv.id)] == ["user", "assistant"]  # the refused question was not stored


async def turns_at_once(base_url: str, conv_id: str, count: int, free_the_worker: Callable[[], object]) -> list[ChatCompletion | BaseException]:
    """`count` turns sent to `conv_id` together, each on its own connection, while the worker
    is busy with something else: the one taken waits in line until all others are answered
    (or a deadline passes), whatever the machine's speed; then the worker is freed for it."""
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as client:
        turns = [asyncio.create_task(client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": f"Question {n}?"}], max_tokens=8, logit_bias=NO_END,
            extra_body={"conversation": conv_id})) for n in range(count)]
        deadline = asyncio.get_running_loop().time() + 60
        while sum(t.done() for t in turns) < count - 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(turns, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.to_thread(free_the_worker)
        return await asyncio.gather(*turns, return_exceptions=True)


def test_of_turns_sent_at_once_to_an_idle_conversation_one_is_taken_and_the_others_are_busy(stack: Stack, client: openai.OpenAI) -> None:
    running, started = stream_in_background(stack, BUSY)
    assert started.wait(120)
    conv = client.conversations.create()
    outcomes = asyncio.run(turns_at_once(stack.base_url, conv.id, 6, lambda: httpx.post(f"{stack.base_url}/jobs/{running['id']}/cancel")))
    taken = [o for o in outcomes if isinstance(o, ChatCompletion)]
    busy = [o for o in outcomes if isinstance(o, openai.ConflictError)]
    assert (len(taken), len(busy)) == (1, 5), outcomes
    assert all((b.body["code"], b.body["param"]) == ("conversation_busy", "conversation") for b in busy)
    wait_for(lambda: client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is None, 60, "the answer to be filed")
    question, answer = items(client, conv.id)  # the refused questions were not stored
    assert question.role == "user" and question.content[0].text in {f"Question {n}?" for n in range(6)}
    assert answer.role == "assistant" and answer.content[0].text == taken[0].choices[0].message.content


def test_a_mark_whose_job_was_never_queued_keeps_the_conversation_busy_only_for_a_while(stack: Stack, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    key = CONVERSATION_KEY.format(owner=LOCAL_USER.name, id=conv.id)
    seconds, micros = stack.redis.time()  # marks are timed by Redis's clock
    now_ms = seconds * 1000 + micros // 1000
    stack.redis.hset(key, mapping={"answering": "never-queued", "answering_ms": now_ms})  # its api stopped before queueing
    turn = {"model": "any", "messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 4, "logit_bias": NO_END,
            "extra_body": {"conversation": conv.id}}
    with pytest.raises(openai.ConflictError):  # as far as anyone can tell, its job is on its way
        client.chat.completions.create(**turn)
    stack.redis.hset(key, "answering_ms", now_ms - (ApiSettings().turn_queueing_s + 1) * 1000)
    done = client.chat.completions.create(**turn)
    wait_for(lambda: client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is None, 60, "the answer to be filed")
    assert [(i.role, i.content[0].text) for i in items(client, conv.id)] == [("user", "Hello?"), ("assistant", done.choices[0].message.content)]


def test_a_non_streamed_turn_returns_the_completion_and_stores_it(client: openai.OpenAI) -> None:
    conv = client.conversations.create(metadata={"topic": "greetings"})
    done = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8,
                                          extra_body={"conversation": conv.id})
    wait_for(lambda: len(items(client, conv.id)) == 2, 60, "the answer to be stored")
    assert items(client, conv.id)[1].content[0].text == done.choices[0].message.content


@pytest.mark.parametrize("messages", [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]])
def test_a_turn_must_end_with_the_users_message(client: openai.OpenAI, messages: list[dict[str, str]]) -> None:
    conv = client.conversations.create()
    with pytest.raises(openai.BadRequestError, match="ends with the user's message"):
        client.chat.completions.create(model="any", messages=messages, extra_body={"conversation": conv.id})
    assert items(client, conv.id) == []


def test_another_users_conversation_is_404_and_nothing_is_queued(make_stack) -> None:
    s = make_stack(AUTH="on")
    s.start_api()  # no worker: a queued job would stay visible
    alice = openai.OpenAI(base_url=s.base_url, api_key=add_user(s, "alice"), max_retries=0, timeout=30)
    bob = openai.OpenAI(base_url=s.base_url, api_key=add_user(s, "bob"), max_retries=0, timeout=30)
    conv = alice.conversations.create()
    with pytest.raises(openai.NotFoundError):
        bob.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}], extra_body={"conversation": conv.id})
    assert s.redis.llen(f"rq:queue:{INTERACTIVE}") == 0 and s.redis.llen("rq:queue:interactive:*") == 0
    assert items(alice, conv.id) == []
