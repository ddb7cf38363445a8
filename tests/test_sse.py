"""hearth.sse, the one reader of the api's event streams: the wire format as sse-starlette writes
it, and Hearth's events in comments (no processes)."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from sse_starlette import ServerSentEvent

from hearth.contract import QueuedEvent, StartedEvent
from hearth.sse import SseEvent, aread_sse, comment_event, hearth_comment, parse_event, read_sse

# What the api sends, written by sse-starlette itself: a chunk, Hearth's comment, a ping, a
# job event with its id, an event whose data spans lines, and a last event without its blank line.
WIRE = b"".join([
    ServerSentEvent(data='{"choices": []}').encode(),
    ServerSentEvent(comment=hearth_comment(QueuedEvent(position=2, eta_s=None))).encode(),
    b": ping - 2026-12-03 00:00:00\r\n\r\n",
    ServerSentEvent(data='{"type": "started", "worker": "w1"}', event="started", id="17-0").encode(),
    ServerSentEvent(data="one\ntwo").encode(),
    b"data: [DONE]\r\n",
]).decode()
EXPECTED = [
    SseEvent(data='{"choices": []}'),
    SseEvent(comments=['hearth {"type":"queued","position":2,"eta_s":null}']),
    SseEvent(comments=["ping - 2026-12-03 00:00:00"]),
    SseEvent(event="started", data='{"type": "started", "worker": "w1"}', id="17-0"),
    SseEvent(data="one\ntwo"),
    SseEvent(data="[DONE]"),
]


def test_reads_the_apis_events_with_ids_names_comments_and_lines() -> None:
    assert list(read_sse(WIRE.splitlines())) == EXPECTED


def test_the_async_reader_reads_the_same() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in WIRE.splitlines():
            yield line

    async def read() -> list[SseEvent]:
        return [event async for event in aread_sse(lines())]

    assert asyncio.run(read()) == EXPECTED


def test_hearth_events_are_the_contracts_and_unknown_ones_are_skipped() -> None:
    events = list(read_sse(WIRE.splitlines()))
    assert events[1].hearth_events() == [QueuedEvent(position=2, eta_s=None)]
    assert events[2].hearth_events() == []  # a ping
    assert parse_event(events[3].data) == StartedEvent(worker="w1")
    assert comment_event('hearth {"type": "from_a_newer_api", "x": 1}') is None
    for unreadable in ('hearth {"type": "queued"}', "hearth {not json", 'hearth ["queued"]'):
        with pytest.raises(ValueError):
            comment_event(unreadable)
