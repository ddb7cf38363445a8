"""Server-sent events as Hearth's api writes them, read in one place: the ui, the tests, the
bench and the soak all parse a stream with `read_sse` (lines from a sync client) or
`aread_sse` (an async one).

Beyond the standard, the api sends Hearth's own events (queue position, model loading, context
trimmed…) inside OpenAI's streams as comment lines, `: hearth {json}`, which OpenAI clients
skip; `/v1/jobs/{id}/events` sends every event as an SSE event named by its type. Either way
the JSON is one of the contract's events (`hearth.contract.Event`).
"""

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter

from hearth.contract import Event, EventType

HEARTH_COMMENT = "hearth "  # a comment carrying one of Hearth's events: `: hearth {json}`

_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
_KNOWN = {t.value for t in EventType}


@dataclass
class SseEvent:
    """One event of the stream: the lines up to a blank line. A block of comments alone (a
    keep-alive ping, Hearth's comments) is one too, with no data."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)

    def hearth_events(self) -> list[Event]:
        """Hearth's events among the comments (see `comment_event`)."""
        return [event for event in map(comment_event, self.comments) if event is not None]


class SseParser:
    """The SSE wire format, a line (without its line break) at a time."""

    def __init__(self) -> None:
        self._current = SseEvent()

    def feed(self, line: str) -> SseEvent | None:
        """The event that `line` ends (a blank line ends one), else None."""
        current = self._current
        if line == "":
            return self.end()
        if line.startswith(":"):
            current.comments.append(line[1:].removeprefix(" "))
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            current.data = f"{current.data}\n{value}" if current.data else value
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        return None  # `retry` and unknown fields are ignored, as the standard says

    def end(self) -> SseEvent | None:
        """What the stream's end (or a blank line) completes, if anything."""
        current, self._current = self._current, SseEvent()
        return current if current.data or current.comments or current.id is not None else None


def read_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """The events of a stream's lines (httpx's `Response.iter_lines()`)."""
    parser = SseParser()
    for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event
    if (event := parser.end()) is not None:
        yield event


async def aread_sse(lines: AsyncIterable[str]) -> AsyncIterator[SseEvent]:
    """The events of a stream's lines (httpx's `Response.aiter_lines()`)."""
    parser = SseParser()
    async for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event
    if (event := parser.end()) is not None:
        yield event


def hearth_comment(event: BaseModel) -> str:
    """The comment that carries `event` in an OpenAI stream (for sse-starlette's `comment=`)."""
    return HEARTH_COMMENT + event.model_dump_json()


def parse_event(raw: str) -> Event | None:
    """The contract's event from its JSON; None for a type this reader does not know (a newer
    api's). Raises ValueError when the JSON or a known event's fields are not right."""
    body = json.loads(raw)
    if not isinstance(body, dict) or "type" not in body:
        raise ValueError("not an event")
    return _EVENT.validate_python(body) if body["type"] in _KNOWN else None


def comment_event(comment: str) -> Event | None:
    """The event a `hearth {json}` comment carries; None for any other comment (pings) and for
    an event type this reader does not know. Raises ValueError when it cannot be read."""
    return parse_event(comment.removeprefix(HEARTH_COMMENT)) if comment.startswith(HEARTH_COMMENT) else None
