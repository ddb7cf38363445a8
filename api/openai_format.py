"""Job events rendered as OpenAI chat completion objects and chunks."""

import json
from typing import Any

from pydantic import BaseModel

from api.errors import HearthError
from hearth.contract import ContextTrimmedEvent, DoneEvent, ErrorCode, ErrorEvent, RequeuedEvent, TokenEvent

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


def chunk(job_id: str, created: int, model: str, delta: dict[str, str], finish_reason: str | None = None) -> str:
    return json.dumps({
        "id": completion_id(job_id), "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    })


def usage_chunk(job_id: str, created: int, model: str, done: DoneEvent) -> str:
    return json.dumps({
        "id": completion_id(job_id), "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [], "usage": done.usage.model_dump(),
    })


def completion(job_id: str, created: int, model: str, text: str, done: DoneEvent, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": completion_id(job_id), "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": done.finish_reason, "logprobs": None}],
        "usage": done.usage.model_dump(),
        **extra,
    }


class Answer:
    """A job's answer as its events tell it, folded one event at a time: the body of a
    non-streamed chat completion, and of a batch line's output."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._extra: dict[str, Any] = {}
        self.final: DoneEvent | ErrorEvent | None = None

    def add(self, event: BaseModel) -> bool:
        """Take one event; whether it was the last."""
        if isinstance(event, TokenEvent):
            self._parts.append(event.text)
        elif isinstance(event, ContextTrimmedEvent):
            self._extra["context_trimmed"] = {"messages": event.messages, "tokens": event.tokens}
        elif isinstance(event, RequeuedEvent) and not event.kept_tokens:
            self._parts.clear()  # started over on another worker
        elif isinstance(event, (DoneEvent, ErrorEvent)):
            self.final = event
            return True
        return False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def completion(self, job_id: str, created: int, model: str) -> dict[str, Any]:
        """The `chat.completion`; raises the job's error as an OpenAI error."""
        if isinstance(self.final, ErrorEvent):
            raise error_of(self.final)
        if self.final is None:
            raise ValueError("the job has not ended")
        return completion(job_id, created, model, self.text, self.final, self._extra)
