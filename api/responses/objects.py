"""A response's job rendered as OpenAI's Responses objects (`openai.types.responses.Response`)
and stream events.

The status is the job's (hearth.lifecycle owns it): queued -> `queued`, running ->
`in_progress`, completed -> `completed` (or `incomplete` when `max_output_tokens` cut it),
cancelled -> `cancelled`, failed or timed out -> `failed`.

Stream events carry sequence numbers that depend only on the job's log, never on how a
reader's tokens were coalesced: `response.created` is 0; when the job starts,
`response.in_progress`, `response.output_item.added` and `response.content_part.added` are
1 to 3; a text delta is 3 plus the answer's tokens so far; the closing events follow the
last token's number. So a stream resumed with `starting_after` numbers its events as the
first one did, and every delta comes exactly once.
"""

from typing import Any

from pydantic import BaseModel

from api.conversations.schemas import file_citations
from api.responses.store import StoredResponse
from hearth.contract import (
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    Event,
    StartedEvent,
    TokenEvent,
)
from hearth.lifecycle import JobStatus, status_of

Final = DoneEvent | ErrorEvent
_STATUS = {
    JobStatus.QUEUED: "queued", JobStatus.RUNNING: "in_progress", JobStatus.COMPLETED: "completed",
    JobStatus.CANCELLED: "cancelled", JobStatus.FAILED: "failed", JobStatus.TIMED_OUT: "failed",
}
_ITEM_STATUS = {"completed": "completed", "in_progress": "in_progress"}  # else `incomplete`
STARTED_SEQ = 1  # response.in_progress; then output_item.added, content_part.added
TEXT_SEQ = 3  # a delta's number is this plus the answer's tokens so far


def _status(job_status: JobStatus, final: Final | None) -> str:
    status = _STATUS[job_status]
    if status == "completed" and isinstance(final, DoneEvent) and final.finish_reason == "length":
        return "incomplete"
    return status


def _usage(final: Final | None) -> dict[str, Any] | None:
    if not isinstance(final, DoneEvent):
        return None
    u = final.usage
    return {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.prompt_tokens_details.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": u.total_tokens}


def _error(final: Final | None) -> dict[str, str] | None:
    if not isinstance(final, ErrorEvent) or final.code == ErrorCode.CANCELLED:
        return None
    code = "invalid_prompt" if final.code == ErrorCode.CONTEXT_LENGTH_EXCEEDED else "server_error"
    return {"code": code, "message": final.message}


def text_part(text: str, final: Final | None = None) -> dict[str, Any]:
    """The answer's text, with a file citation for each attached document it was given from (or
    part of one: Hearth adds `page` and `chunk`), at its end."""
    cited = final.citations if isinstance(final, DoneEvent) else []
    return {"type": "output_text", "text": text, "annotations": [a.model_dump() for a in file_citations(cited, len(text))], "logprobs": []}


def message_item(record: StoredResponse, text: str, status: str, final: Final | None = None) -> dict[str, Any]:
    content = [] if status == "in_progress" and not text else [text_part(text, final)]
    return {"id": f"msg_{record.job_id}", "type": "message", "role": "assistant", "status": status, "content": content}


def response_object(record: StoredResponse, job_status: JobStatus, text: str, final: Final | None, *, started: bool | None = None) -> dict[str, Any]:
    """The `response`; `started` (default: the job has left the queue) says whether its
    output message exists yet."""
    status = _status(job_status, final)
    started = job_status != JobStatus.QUEUED if started is None else started
    output = [message_item(record, text, _ITEM_STATUS.get(status, "incomplete"), final)] if started and (text or final is None or isinstance(final, DoneEvent)) else []
    return {
        "id": record.id, "object": "response", "created_at": record.created_at, "model": record.model, "status": status,
        "background": record.background, "error": _error(final),
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": record.instructions, "max_output_tokens": record.max_output_tokens, "metadata": record.metadata,
        "output": output, "parallel_tool_calls": False, "previous_response_id": record.previous_response_id,
        "conversation": {"id": record.conversation} if record.conversation else None,
        "temperature": record.temperature, "top_p": record.top_p, "text": {"format": record.text_format},
        "tool_choice": "auto", "tools": [], "truncation": "disabled", "usage": _usage(final),
    }


def ended(record: StoredResponse, text: str, final: Final) -> dict[str, Any]:
    """The response of an ended job, from its final event (whose status the lifecycle gave it)."""
    status = status_of(final)
    assert status is not None
    return response_object(record, status, text, final, started=True)


class ResponseEvents:
    """Folds a response's job events into Responses stream events, each with its number."""

    def __init__(self, record: StoredResponse):
        self._record = record
        self._parts: list[str] = []
        self.tokens = 0  # answer tokens so far
        self.started = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def created(self) -> list[tuple[int, dict[str, Any]]]:
        return self._numbered(0, [{"type": "response.created", "response": response_object(self._record, JobStatus.QUEUED, "", None)}])

    def _first_number(self, event: BaseModel) -> int | None:
        """The number of the first stream event `event` would give (None: it gives none)."""
        if isinstance(event, StartedEvent):
            return STARTED_SEQ
        if isinstance(event, TokenEvent):
            return TEXT_SEQ + self.tokens + event.tokens
        if isinstance(event, (DoneEvent, ErrorEvent)):
            return TEXT_SEQ + self.tokens + 1
        return None

    def add(self, event: Event) -> list[tuple[int, dict[str, Any]]]:
        """The stream events of one job event, numbered; [] for those that have none
        (trimming and queue position go to the client as SSE comments instead)."""
        n = self._first_number(event)
        if isinstance(event, StartedEvent):
            self.started = True
            item = message_item(self._record, "", "in_progress")
            return self._numbered(n, [
                {"type": "response.in_progress", "response": response_object(self._record, JobStatus.RUNNING, "", None)},
                {"type": "response.output_item.added", "output_index": 0, "item": item},
                {"type": "response.content_part.added", **self._where(), "part": text_part("")},
            ])
        if isinstance(event, TokenEvent):
            self._parts.append(event.text)
            self.tokens += event.tokens
            return self._numbered(n, [{"type": "response.output_text.delta", **self._where(), "delta": event.text, "logprobs": []}])
        if isinstance(event, (DoneEvent, ErrorEvent)):
            response = ended(self._record, self.text, event)
            closing = []
            if self.started and response["output"]:
                item = response["output"][0]
                closing = [
                    {"type": "response.output_text.done", **self._where(), "text": self.text, "logprobs": []},
                    {"type": "response.content_part.done", **self._where(), "part": item["content"][0]},
                    {"type": "response.output_item.done", "output_index": 0, "item": item},
                ]
            kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(response["status"], "response.failed")
            return self._numbered(n, [*closing, {"type": kind, "response": response}])
        return []

    def replay(self, text: str, final: Final) -> list[tuple[int, dict[str, Any]]]:
        """The events of an answer whose log has expired, from its filed outcome."""
        tokens = final.usage.completion_tokens if isinstance(final, DoneEvent) else 1
        answered = bool(text) or isinstance(final, DoneEvent)
        return [*(self.add(StartedEvent(worker="")) if answered else []),
                *(self.add(TokenEvent(text=text, tokens=max(tokens, 1))) if text else []), *self.add(final)]

    def _where(self) -> dict[str, Any]:
        return {"item_id": f"msg_{self._record.job_id}", "output_index": 0, "content_index": 0}

    @staticmethod
    def _numbered(first: int | None, events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
        assert first is not None
        return [(first + i, {**event, "sequence_number": first + i}) for i, event in enumerate(events)]
