"""Job events rendered as OpenAI chat completion objects and chunks."""

import json
from typing import Any

from pydantic import BaseModel

from api.conversations.schemas import file_citations
from api.errors import HearthError
from hearth.contract import (
    ContextTrimmedEvent,
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    RequeuedEvent,
    TokenEvent,
    ToolCall,
    ToolCallEvent,
)

# How a job's error reaches a non-streaming client: (HTTP status, OpenAI error type).
_ERROR_STATUS: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: (400, "invalid_request_error"),
    ErrorCode.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorCode.CANCELLED: (409, "cancelled"),
    ErrorCode.TIMEOUT: (504, "timeout"),
    ErrorCode.WORKER_LOST: (503, "service_unavailable"),
    ErrorCode.INTERNAL: (500, "server_error"),
}


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def error_of(event: ErrorEvent) -> HearthError:
    status, kind = _ERROR_STATUS[event.code]
    return HearthError(status, event.message, kind, event.code.value, event.param)


def finish_reason(done: DoneEvent, legacy: bool) -> str:
    """A call ends the answer as `tool_calls`, or for the legacy `functions` as `function_call`."""
    return "function_call" if legacy and done.finish_reason == "tool_calls" else done.finish_reason


def call_delta(event: ToolCallEvent, legacy: bool) -> dict[str, Any]:
    """A chunk's delta for part of a call: its id, type and name first, then its arguments."""
    function = {**({"name": event.name} if event.name is not None else {}), "arguments": event.arguments}
    if legacy:
        return {"function_call": function}
    head = {"id": event.id, "type": "function"} if event.id is not None else {}
    return {"tool_calls": [{"index": event.index, **head, "function": function}]}


def citations(done: DoneEvent) -> dict[str, Any]:
    """Hearth's `citations` field: the attached documents the answer was given from, and which
    parts of them when only parts were read (none without documents)."""
    return {"citations": [c.model_dump(exclude={"index"}) for c in file_citations(done.citations, 0)]} if done.citations else {}


def chunk(job_id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None,
          extra: dict[str, Any] | None = None) -> str:
    return json.dumps({
        "id": completion_id(job_id), "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **(extra or {}),
    })


def usage_chunk(job_id: str, created: int, model: str, done: DoneEvent) -> str:
    return json.dumps({
        "id": completion_id(job_id), "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [], "usage": done.usage.model_dump(),
    })


def completion(job_id: str, created: int, model: str, message: dict[str, Any], done: DoneEvent, extra: dict[str, Any],
               legacy: bool = False) -> dict[str, Any]:
    return {
        "id": completion_id(job_id), "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(done, legacy), "logprobs": None}],
        "usage": done.usage.model_dump(),
        **extra,
        **citations(done),
    }


class Answer:
    """A job's answer as its events tell it, folded one event at a time: the body of a
    non-streamed chat completion, and of a batch line's output."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.calls: list[ToolCallEvent] = []  # each call whole: its arguments joined
        self._extra: dict[str, Any] = {}
        self.final: DoneEvent | ErrorEvent | None = None

    def add(self, event: BaseModel) -> bool:
        """Take one event; whether it was the last."""
        if isinstance(event, TokenEvent):
            self._parts.append(event.text)
        elif isinstance(event, ToolCallEvent):
            if event.id is not None:
                self.calls.append(event)
            elif self.calls:
                self.calls[-1] = self.calls[-1].model_copy(update={"arguments": self.calls[-1].arguments + event.arguments})
        elif isinstance(event, ContextTrimmedEvent):
            self._extra["context_trimmed"] = {"messages": event.messages, "tokens": event.tokens}
        elif isinstance(event, RequeuedEvent) and not event.kept_tokens:
            self._parts.clear()  # started over on another worker
            self.calls.clear()
        elif isinstance(event, (DoneEvent, ErrorEvent)):
            self.final = event
            return True
        return False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(id=c.id or "", name=c.name or "", arguments=c.arguments) for c in self.calls]

    def message(self, legacy: bool = False) -> dict[str, Any]:
        """The assistant's message: its text (null beside calls, as at OpenAI), its calls."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or (None if self.calls else "")}
        if self.calls and legacy:
            message["function_call"] = {"name": self.calls[0].name, "arguments": self.calls[0].arguments}
        elif self.calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in self.calls]
        return message

    def completion(self, job_id: str, created: int, model: str, legacy: bool = False) -> dict[str, Any]:
        """The `chat.completion`; raises the job's error as an OpenAI error."""
        if isinstance(self.final, ErrorEvent):
            raise error_of(self.final)
        if self.final is None:
            raise ValueError("the job has not ended")
        return completion(job_id, created, model, self.message(legacy), self.final, self._extra, legacy)
