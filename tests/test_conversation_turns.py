"""Chat turns stored in a conversation by the api itself (`conversation` on a chat completion)."""

import asyncio
import json
from collections.abc import Callable
from typing import Any
from unittest.mock import ANY

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion
from redis.asyncio import Redis as AsyncRedis
from rq.job import Job

from api.accounts.users import LOCAL_USER
from api.conversations.schemas import message
from api.conversations.store import CONVERSATION_KEY, REPLACED_KEY, ConversationStore
from api.errors import HearthError
from api.settings import ApiSettings
from devstack import INTERACTIVE, Stack, add_user, wait_for
from hearth.contract import RQ_SERIALIZER
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


# One source of history: the conversation's stored messages; the request carries its
# instructions and question only, and may replace a stored question and all after it.

def say(role: str, text: str) -> dict[str, str]:
    return {"type": "message", "role": role, "content": text}


def sent_messages(stack: Stack, job_id: str) -> list[tuple[str, str]]:
    """The messages a job's prompt was made from, as the api queued them."""
    return [(m["role"], m["content"]) for m in Job.fetch(job_id, connection=stack.redis, serializer=RQ_SERIALIZER).args[0]["messages"]]


def turn(client: openai.OpenAI, conv_id: str, question: str, **hearth: str) -> tuple[str, str, str]:
    """A short turn stored in `conv_id` (Hearth's fields in `hearth`), once its answer is filed:
    its job, its stored question's id, its answer."""
    raw = client.chat.completions.with_raw_response.create(
        model="any", messages=[{"role": "user", "content": question}], max_tokens=6, logit_bias=NO_END,
        extra_body={"conversation": conv_id, **hearth})
    wait_for(lambda: client.conversations.retrieve(conv_id).model_extra["hearth_job_id"] is None, 60, "the answer to be filed")
    return raw.headers["X-Job-Id"], raw.headers["X-Conversation-Item-Id"], str(raw.parse().choices[0].message.content)


def test_a_turn_continues_the_stored_messages_and_carries_only_its_instructions_and_question(stack: Stack, client: openai.OpenAI) -> None:
    conv = client.conversations.create(items=[say("user", "My name is Ada."), say("assistant", "Hello, Ada.")])
    raw = client.chat.completions.with_raw_response.create(
        model="any", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is my name?"}],
        max_tokens=6, logit_bias=NO_END, extra_body={"conversation": conv.id})
    assert sent_messages(stack, raw.headers["X-Job-Id"]) == [
        ("system", "Be brief."), ("user", "My name is Ada."), ("assistant", "Hello, Ada."), ("user", "What is my name?")]
    wait_for(lambda: len(items(client, conv.id)) == 4, 60, "the answer to be stored")
    question, answer = items(client, conv.id)[2:]
    assert (question.id, question.content[0].text) == (raw.headers["X-Conversation-Item-Id"], "What is my name?")
    assert answer.content[0].text == raw.parse().choices[0].message.content  # the instructions are the request's, not stored


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And?"}], "messages.0"),
    ([{"role": "user", "content": "One."}, {"role": "user", "content": "Two."}], "messages.0"),
    ([{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And?"}],
     "messages.1"),
])
def test_a_turn_that_carries_earlier_turns_is_400_and_nothing_is_stored(stack: Stack, client: openai.OpenAI,
                                                                        messages: list[dict[str, str]], param: str) -> None:
    conv = client.conversations.create(items=[say("user", "Hi."), say("assistant", "Hello.")])
    before = items(client, conv.id)
    queued = stack.redis.llen(f"rq:queue:{INTERACTIVE}")
    with pytest.raises(openai.BadRequestError, match="stored messages are its history") as refused:
        client.chat.completions.create(model="any", messages=messages, extra_body={"conversation": conv.id})
    assert refused.value.param == param
    assert items(client, conv.id) == before and stack.redis.llen(f"rq:queue:{INTERACTIVE}") == queued


@pytest.mark.timeout(300)  # two answers
def test_replace_from_regenerates_or_edits_in_one_request(stack: Stack, client: openai.OpenAI) -> None:
    conv = client.conversations.create(items=[say("user", "Name a fruit."), say("assistant", "Apple."),
                                              say("user", "Name another one."), say("assistant", "Pear.")])
    q1, a1, q2, _ = items(client, conv.id)
    # Regenerate: the last question again, in place of itself and its answer.
    job_id, asked, said = turn(client, conv.id, "Name another one.", replace_from=q2.id)
    assert sent_messages(stack, job_id) == [("user", "Name a fruit."), ("assistant", "Apple."), ("user", "Name another one.")]
    assert [(i.id, i.role, i.content[0].text) for i in items(client, conv.id)] == [
        (q1.id, "user", "Name a fruit."), (a1.id, "assistant", "Apple."), (asked, "user", "Name another one."), (ANY, "assistant", said)]
    assert asked != q2.id
    # Edit the first question: it and everything after it are replaced.
    job_id, asked, said = turn(client, conv.id, "Name a berry.", replace_from=q1.id)
    assert sent_messages(stack, job_id) == [("user", "Name a berry.")]
    assert [(i.id, i.role, i.content[0].text) for i in items(client, conv.id)] == [(asked, "user", "Name a berry."), (ANY, "assistant", said)]


def test_replace_from_names_a_stored_question_of_the_conversation(stack: Stack, client: openai.OpenAI) -> None:
    conv = client.conversations.create(items=[say("user", "Name a fruit."), say("assistant", "Apple.")])
    elsewhere = client.conversations.create(items=[say("user", "Name a fruit.")])
    question, answer = before = items(client, conv.id)
    queued = stack.redis.llen(f"rq:queue:{INTERACTIVE}")
    ask = {"model": "any", "messages": [{"role": "user", "content": "Name a berry."}], "max_tokens": 4}
    for hearth, refusal, code in (({"conversation": conv.id, "replace_from": items(client, elsewhere.id)[0].id}, openai.NotFoundError, "item_not_found"),
                                  ({"conversation": conv.id, "replace_from": "msg_nothing"}, openai.NotFoundError, "item_not_found"),
                                  ({"conversation": conv.id, "replace_from": answer.id}, openai.BadRequestError, None),
                                  ({"replace_from": question.id}, openai.BadRequestError, None)):
        with pytest.raises(refusal) as refused:
            client.chat.completions.create(**ask, extra_body=hearth)
        assert (refused.value.param, refused.value.code) == ("replace_from", code)
    assert items(client, conv.id) == before and stack.redis.llen(f"rq:queue:{INTERACTIVE}") == queued

    # While an answer is being written, a turn that would replace anything is refused as any other.
    body = {**streamed_turn(conv.id, "Tell me about ships.", 40)}
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        with pytest.raises(openai.ConflictError) as busy:
            client.chat.completions.create(**ask, extra_body={"conversation": conv.id, "replace_from": question.id})
        assert busy.value.code == "conversation_busy"
    wait_for(lambda: client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is None, 120, "the answer to be filed")
    assert [i.id for i in items(client, conv.id)][:2] == [question.id, answer.id]  # the refused turn replaced nothing


def test_a_replacing_turn_refused_a_place_in_line_puts_back_what_it_replaced(make_stack) -> None:
    s = make_stack(MAX_WAITING_PER_USER="1")
    s.start_api()  # no worker: what is queued waits
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=30)
    conv = client.conversations.create(items=[say("user", "Name a fruit."), say("assistant", "Apple."),
                                              say("user", "Name another one."), say("assistant", "Pear.")])
    before = items(client, conv.id)
    waiting = {"model": "any", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 4}
    with httpx.stream("POST", f"{s.base_url}/chat/completions", json=waiting, timeout=30) as queued:
        assert queued.status_code == 200  # this user's one waiting chat
        for replaced in before[::2]:
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Name a berry."}],
                                               extra_body={"conversation": conv.id, "replace_from": replaced.id})
            assert items(client, conv.id) == before  # the same items, ids and order
            assert client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is None
    assert not s.redis.exists(REPLACED_KEY.format(owner=LOCAL_USER.name, id=conv.id))


def test_of_two_tabs_racing_to_replace_one_takes_the_turn_and_a_stale_history_is_refused(stack: Stack, client: openai.OpenAI) -> None:
    """The store's write for a turn: the replacement, the question and the mark are one step,
    and a turn whose history was read before another writer came is refused (409)."""
    conv = client.conversations.create(items=[say("user", "Name a fruit."), say("assistant", "Apple.")])
    question, answer = items(client, conv.id)

    async def run() -> list[object]:
        redis = AsyncRedis.from_url(stack.redis_url)
        store = ConversationStore(redis, ApiSettings())
        tab = {"replace_from": question.id, "follows": ""}
        try:
            outcomes: list[object] = list(await asyncio.gather(
                *(store.add_items(LOCAL_USER.name, conv.id, [message("user", f"Tab {n}?")], answering=f"job-{n}", **tab) for n in range(2)),
                return_exceptions=True))
            taken = next(n for n, o in enumerate(outcomes) if not isinstance(o, BaseException))
            outcomes.append([i.content[0].text for i in items(client, conv.id)])
            # What it replaced is aside, not gone, while the turn may still be withdrawn.
            outcomes.append(await store.missing(LOCAL_USER.name, conv.id, [question.id, answer.id, "msg_never"]))
            withdrawn = await store.withdraw(LOCAL_USER.name, conv.id, f"job-{taken}")  # its job was never queued
            outcomes.append([(i.id, i.text()) for i in withdrawn])
            outcomes.append([i.id for i in items(client, conv.id)])
            # A history read before another writer came: its question would not follow what was read.
            for stale in ({"replace_from": answer.id, "follows": ""}, {"follows": ""}):
                try:
                    await store.add_items(LOCAL_USER.name, conv.id, [message("user", "Late?")], answering="job-late", **stale)
                except HearthError as exc:
                    outcomes.append((exc.status, exc.code))
            return outcomes
        finally:
            await redis.aclose()

    *raced, stored_then, gone, withdrawn, restored, late, stale = asyncio.run(run())
    assert sorted(isinstance(o, HearthError) and (o.status, o.code) == (409, "conversation_busy") for o in raced) == [False, True]
    assert stored_then in (["Tab 0?"], ["Tab 1?"])
    assert gone == {"msg_never"}
    assert isinstance(withdrawn, list) and [said for _, said in withdrawn] == stored_then  # the question it deleted
    assert withdrawn[0][0] not in restored
    assert restored == [question.id, answer.id]
    assert late == stale == (409, "conversation_changed")
    assert [i.id for i in items(client, conv.id)] == [question.id, answer.id]
    assert client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is None


def test_a_replacing_turn_whose_job_never_reached_the_queue_is_withdrawn_by_the_next_turn(stack: Stack, client: openai.OpenAI) -> None:
    """Its api stopped between the replacing write and queueing: once the queueing time is past,
    the next turn puts back what it replaced and drops its question, then goes on."""
    conv = client.conversations.create(items=[say("user", "Name a fruit."), say("assistant", "Apple.")])
    before = items(client, conv.id)

    async def stranded() -> None:
        redis = AsyncRedis.from_url(stack.redis_url)
        try:
            await ConversationStore(redis, ApiSettings()).add_items(
                LOCAL_USER.name, conv.id, [message("user", "Lost?")], answering="never-queued", replace_from=before[0].id, follows="")
        finally:
            await redis.aclose()

    asyncio.run(stranded())
    assert [i.content[0].text for i in items(client, conv.id)] == ["Lost?"]
    key = CONVERSATION_KEY.format(owner=LOCAL_USER.name, id=conv.id)
    seconds, _ = stack.redis.time()
    stack.redis.hset(key, "answering_ms", (seconds - ApiSettings().turn_queueing_s - 1) * 1000)
    _, asked, said = turn(client, conv.id, "Hello?")
    assert [(i.id, i.content[0].text) for i in items(client, conv.id)] == [
        (before[0].id, "Name a fruit."), (before[1].id, "Apple."), (asked, "Hello?"), (ANY, said)]
