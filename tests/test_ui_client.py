"""The ui's api client and reply logic, against scripted HTTP answers (no processes, no browser)."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from hearth.contract import ContextTrimmedEvent, LoadingEvent, QueuedEvent, StartedEvent
from ui.client import (
    CUT_OFF,
    SESSION_ENDED,
    UNREACHABLE,
    UNREADABLE,
    ApiError,
    Delta,
    Finished,
    HearthClient,
    Session,
    SessionEnded,
    error_for_status,
    parse_session,
)
from ui.reply import CUT_SHORT, EMPTY, UNEXPECTED, ReplyView, is_note, new_reply, plain_text, queue_line, trimmed_line

BASE = "http://api.test/v1"
JOB = "job123"


def chunk(delta: dict[str, str], finish: str | None = None) -> str:
    body = {"id": f"chatcmpl-{JOB}", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\r\n\r\n"


def hearth(event: dict[str, object]) -> str:
    return f": hearth {json.dumps(event)}\r\n\r\n"


GOOD_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    hearth({"type": "queued", "position": 2, "eta_s": 40.0}),
    ": ping - 2026-11-25 00:00:00\r\n\r\n",
    hearth({"type": "started", "worker": "w1"}),
    hearth({"type": "loading", "model": "mistral-7b"}),
    hearth({"type": "context_trimmed", "messages": 3, "tokens": 812}),
    hearth({"type": "some_future_event"}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    "data: [DONE]\r\n\r\n",
]


class Api:
    """A scripted api: the chat answer is given per test; every request is recorded."""

    def __init__(self, chat: Callable[[httpx.Request], httpx.Response]):
        self.chat = chat
        self.requests: list[httpx.Request] = []
        self.cancelled: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/cancel"):
            self.cancelled.append(request.url.path.split("/")[-2])
            return httpx.Response(200, json={"status": "cancelled"})
        return self.chat(request)

    def client(self, api_key: str | None = None) -> HearthClient:
        return HearthClient(httpx.AsyncClient(transport=httpx.MockTransport(self.handle)), BASE, api_key)


def sse(parts: list[str], status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, headers={"X-Job-Id": JOB, "content-type": "text/event-stream"},
                                    content="".join(parts).encode())


def events_of(api: Api, messages: list[dict[str, str]] | None = None) -> list[object]:
    async def run() -> list[object]:
        stream = await api.client().open_chat(messages or [{"role": "user", "content": "hi"}])
        try:
            return [e async for e in stream.events()]
        finally:
            await stream.aclose()

    return asyncio.run(run())


def error_of(api: Api) -> ApiError:
    with pytest.raises(ApiError) as caught:
        events_of(api)
    return caught.value


def test_stream_yields_tokens_and_hearth_events_in_order() -> None:
    api = Api(sse(GOOD_STREAM))
    assert events_of(api) == [QueuedEvent(position=2, eta_s=40.0), StartedEvent(worker="w1"), LoadingEvent(model="mistral-7b"), ContextTrimmedEvent(messages=3, tokens=812), Delta("Hel"), Delta("lo"), Finished("stop")]
    sent = json.loads(api.requests[0].content)
    assert sent == {"messages": [{"role": "user", "content": "hi"}], "stream": True}


def test_stream_error_event_raises_the_apis_message() -> None:
    error = {"error": {"message": "The worker serving this request stopped.", "type": "server_error", "code": "worker_lost"}}
    api = Api(sse([chunk({"content": "Hel"}), f"data: {json.dumps(error)}\r\n\r\n"]))
    raised = error_of(api)
    assert (raised.message, raised.code) == ("The worker serving this request stopped.", "worker_lost")


def test_stream_cut_before_done_is_reported() -> None:
    assert error_of(Api(sse([chunk({"content": "Hel"})]))).message == CUT_OFF


def test_garbage_in_the_stream_is_reported_without_its_text() -> None:
    raised = error_of(Api(sse(["data: {not json\r\n\r\n"])))
    assert "not json" not in raised.message and "Hearth" in raised.message


def test_busy_429_gives_retry_after() -> None:
    body = {"error": {"message": "Too many requests.", "type": "rate_limit_error", "code": "rate_limited"}}
    raised = error_of(Api(lambda _: httpx.Response(429, headers={"Retry-After": "12"}, json=body)))
    assert raised.message == "Hearth is busy right now. Try again in 12 s."
    assert raised.retry_after_s == 12


def test_unavailable_503_shows_the_apis_reason() -> None:
    body = {"error": {"message": "Hearth's queue (Redis) is unreachable; try again shortly.", "type": "service_unavailable", "code": "redis_unavailable"}}
    raised = error_of(Api(lambda _: httpx.Response(503, json=body)))
    assert raised.message.startswith("Hearth can't take requests right now (Hearth's queue (Redis) is unreachable")
    assert raised.code == "redis_unavailable"


def test_error_without_a_json_body_still_reads_well() -> None:
    raised = error_of(Api(lambda _: httpx.Response(502, text="<html>Bad Gateway</html>")))
    assert raised.message == "Hearth can't take requests right now. Try again shortly."


def test_invalid_request_shows_the_apis_message() -> None:
    body = {"error": {"message": "messages: Field required", "type": "invalid_request_error", "code": None}}
    assert error_of(Api(lambda _: httpx.Response(400, json=body))).message == "messages: Field required"


def test_connection_refused_is_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    raised = error_of(Api(refuse))
    assert raised.message == UNREACHABLE and "Errno" not in raised.message


def test_session_key_is_sent_as_bearer_and_absent_without_one() -> None:
    async def run(client: HearthClient) -> None:
        stream = await client.open_chat([{"role": "user", "content": "hi"}])
        await stream.aclose()
        await client.cancel(JOB)

    api = Api(sse(GOOD_STREAM))
    asyncio.run(run(api.client("sk-session")))
    asyncio.run(run(api.client()))
    assert [r.headers.get("authorization") for r in api.requests] == ["Bearer sk-session"] * 2 + [None] * 2


def test_login_and_me_answers_parse_into_a_session() -> None:
    assert parse_session({"token": "t1", "user": "alice", "role": "user", "auth": True}) == Session("t1", "alice", "user", True)
    assert parse_session({"token": None, "user": "local", "role": "admin", "auth": False}) == Session(None, "local", "admin", False)
    # `GET /v1/me` names no token: the session keeps the one it sent.
    assert parse_session({"user": "alice", "role": "user", "auth": True}, "t1") == Session("t1", "alice", "user", True)
    bad: object
    for bad in (None, [], {"user": "alice"}, {"user": 3, "auth": True, "token": "t"}, {"user": "a", "auth": True}):
        with pytest.raises(ApiError) as caught:
            parse_session(bad)
        assert caught.value.message == UNREADABLE


def test_a_refused_token_reads_as_a_session_that_ended() -> None:
    body = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": "invalid_api_key"}}
    error = error_for_status(httpx.Response(401, json=body), body)
    assert isinstance(error, SessionEnded) and (error.message, error.code) == (SESSION_ENDED, "invalid_api_key")


def test_a_shown_message_reads_as_its_plain_text() -> None:
    """What regenerate and edit send again: a message's text blocks, not its files."""
    assert plain_text([{"type": "text", "text": "one"}, {"type": "file", "file": {"path": "/tmp/x.png"}}, "two"]) == "one\ntwo"
    assert plain_text({"type": "text", "text": "alone"}) == "alone"
    assert plain_text("plain string") == "plain string"
    assert plain_text([{"type": "file", "file": {"path": "/tmp/x.png"}}]) == ""
    assert plain_text(None) == ""


def test_queue_and_trim_wording() -> None:
    assert queue_line(2, 40.0) == "You are #2 in line (about 40 s)"
    assert queue_line(2, None) == "You are #2 in line"
    assert queue_line(1, 0.2) == "You are #1 in line (about 1 s)"
    assert trimmed_line(3) == "3 earlier messages were left out to fit the model's memory"
    assert trimmed_line(1) == "1 earlier message was left out to fit the model's memory"


def test_reply_view_replaces_the_waiting_line_and_keeps_notes_apart() -> None:
    view = ReplyView()
    assert view.apply(QueuedEvent(position=2, eta_s=None))
    assert [m["metadata"]["title"] for m in view.messages()] == ["You are #2 in line"]
    assert view.apply(StartedEvent(worker="w"))
    assert view.messages() == []
    assert view.apply(LoadingEvent(model="mistral-7b"))
    assert [m["metadata"]["title"] for m in view.messages()] == ["Loading mistral-7b…"]
    assert view.apply(ContextTrimmedEvent(messages=3, tokens=812))
    assert view.apply(Delta("Hi"))
    assert not view.apply(Finished("stop"))
    shown = view.messages()
    assert [is_note(m) for m in shown] == [True, False]
    assert shown[1] == {"role": "assistant", "content": "Hi"}
    assert view.apply(Finished("length"))
    assert view.messages()[-1]["metadata"]["title"] == f"ℹ️ {CUT_SHORT}"


def test_an_empty_reply_is_explained() -> None:
    view = ReplyView()
    assert view.apply(Finished("stop"))
    assert [m["metadata"]["title"] for m in view.messages()] == [f"ℹ️ {EMPTY}"]


def collect(client: HearthClient, message: str = "hi") -> list[list[dict[str, Any]]]:
    async def run() -> list[list[dict[str, Any]]]:
        return [shown async for shown in new_reply(client, [{"role": "user", "content": message}])]

    return asyncio.run(run())


def test_reply_streams_the_growing_text_with_the_trim_note() -> None:
    api = Api(sse(GOOD_STREAM))
    shown = collect(api.client())
    assert shown[-1][-1] == {"role": "assistant", "content": "Hello"}
    assert any(m.get("metadata", {}).get("title") == "You are #2 in line (about 40 s)" for s in shown for m in s)
    assert shown[-1][0]["metadata"]["title"] == "ℹ️ 3 earlier messages were left out to fit the model's memory"
    assert api.cancelled == []  # a finished job is not cancelled


def test_reply_shows_errors_as_a_note_never_raises() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    shown = collect(Api(refuse).client())
    assert shown == [[{"role": "assistant", "content": "", "metadata": {"title": f"⚠️ {UNREACHABLE}"}}]]


def test_reply_hides_unexpected_failures() -> None:
    def crash(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("secret internals")

    shown = collect(Api(crash).client())
    assert shown[-1][-1]["metadata"]["title"] == f"⚠️ {UNEXPECTED}"
    assert "secret" not in json.dumps(shown)


class Endless(httpx.AsyncByteStream):
    """A chat stream that sends one token and then waits, like a long generation."""

    def __init__(self) -> None:
        self.closed = False
        self.blocked = asyncio.Event()  # set once the first token is out and it waits

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield (chunk({"role": "assistant", "content": ""}) + chunk({"content": "Once"})).encode()
        self.blocked.set()
        await asyncio.Event().wait()
        yield b""  # never reached

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize("how", ["cancel_task", "close_generator"])
def test_closing_a_reply_closes_the_stream_and_leaves_the_job(how: str) -> None:
    """Gradio cancels the task running the generator, then closes it (Stop, another
    conversation opened, the page gone): the upstream stream is closed, but the job goes on for
    its answer to be stored; Stop cancels it itself (ui.chat.cancel_answer)."""
    body = Endless()
    api = Api(lambda _: httpx.Response(200, headers={"X-Job-Id": JOB}, stream=body))

    async def run() -> None:
        gen = new_reply(api.client(), [{"role": "user", "content": "a long story"}], "conv_1")
        assert (await anext(gen))[-1]["content"] == "Once"
        if how == "close_generator":
            await gen.aclose()
            return
        task = asyncio.ensure_future(anext(gen))
        await body.blocked.wait()  # the reply now waits on the stream
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await gen.aclose()

    asyncio.run(asyncio.wait_for(run(), 10))
    assert body.closed
    assert api.cancelled == []
    assert json.loads(api.requests[0].content)["conversation"] == "conv_1"


def test_a_followed_job_reads_as_the_same_events_as_a_chat() -> None:
    def job(name: str, body: dict[str, object], event_id: str | None = "1-0") -> str:
        return f"event: {name}\r\n" + (f"id: {event_id}\r\n" if event_id else "") + f"data: {json.dumps(body)}\r\n\r\n"

    parts = [job("queued", {"type": "queued", "position": 1, "eta_s": None}, None), ": ping\r\n\r\n",
             job("started", {"type": "started", "worker": "w1"}), job("token", {"type": "token", "text": "Hi", "tokens": 1}),
             job("done", {"type": "done", "finish_reason": "length", "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})]
    api = Api(sse(parts))

    async def run() -> list[object]:
        stream = await api.client().follow(JOB)
        try:
            return [e async for e in stream.events()]
        finally:
            await stream.aclose()

    assert asyncio.run(run()) == [QueuedEvent(position=1, eta_s=None), StartedEvent(worker="w1"), Delta("Hi"), Finished("length")]
    assert api.requests[0].url.path == f"/v1/jobs/{JOB}/events"

    failed = Api(sse([job("error", {"type": "error", "code": "cancelled", "message": "The request was cancelled."})]))
    with pytest.raises(ApiError, match="cancelled") as caught:
        asyncio.run(asyncio.wait_for(_drain(failed), 10))
    assert caught.value.code == "cancelled"


async def _drain(api: Api) -> None:
    stream = await api.client().follow(JOB)
    try:
        async for _ in stream.events():
            pass
    finally:
        await stream.aclose()


def test_a_turn_in_place_of_a_stored_question_sends_its_id_and_learns_its_own() -> None:
    """Regenerate and edit: one request naming the question it replaces (`replace_from`); the
    page's question gets the id the api stored it under, for the next regenerate or edit."""
    api = Api(lambda _: httpx.Response(200, headers={"X-Job-Id": JOB, "X-Conversation-Item-Id": "msg_new",
                                                     "content-type": "text/event-stream"}, content="".join(GOOD_STREAM).encode()))
    question = {"role": "user", "content": "Name a berry.", "id": "msg_old"}

    async def run() -> list[list[dict[str, object]]]:
        return [shown async for shown in new_reply(api.client(), [{"role": "user", "content": "Name a berry."}], "conv_1",
                                                   "msg_old", question)]

    assert asyncio.run(run())[-1][-1]["content"] == "Hello"
    sent = json.loads(api.requests[0].content)
    assert (sent["conversation"], sent["replace_from"], sent["messages"]) == ("conv_1", "msg_old", [{"role": "user", "content": "Name a berry."}])
    assert question["id"] == "msg_new"
