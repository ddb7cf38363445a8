"""Job events rendered as OpenAI chat completion objects and chunks."""

import json
from typing import Any

from hearth.contract import DoneEvent, ErrorCode, ErrorEvent
from api.errors import HearthError

# How a job's error reaches a non-streaming client: (HTTP status, OpenAI error type).
_ERROR_STATUS: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: (400, "invalid_request_error"),
    ErrorCode.CANCELLED: (409, "cancelled"),
    ErrorCode.TIMEOUT: (504, "timeout"),
    ErrorCode.WORKER_LOST: (503, "service_unavailable"),
    ErrorCode.INTERNAL: (500, "server_error"),
}


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def error_of(event: ErrorEvent) -> HearthError:
    status, kind = _ERROR_STATUS[event.code]
    return HearthError(status, event.message, kind, event.code.value)


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
