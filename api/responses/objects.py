"""A response's job rendered as OpenAI's Responses objects (`openai.types.responses.Response`)
and stream events.

The status is the job's (hearth.lifecycle owns it): queued -> `queued`, running ->
`in_progress`, completed -> `completed` (or `incomplete` when `max_output_tokens` cut it),
cancelled -> `cancelled`, failed or timed out -> `failed`.

Stream events carry sequence numbers that depend only on the job's log, never on how a
reader's tokens were coalesced: `response.created` is 0; when the job starts,
`response.in_progress`, `response.output_item.added` and `response.content_part.added` are
1 to 3; a text delta is 3 plus the answer's tokens so far; the closing events follow the
last token's number, led by a `response.output_text.annotation.added` for each file citation
of the answer's text. A response offered tools opens its message at the first token instead
(its answer may be calls), numbered 2 and 3 all the same. An answer of function calls numbers
its events 4 + 4 x the answer's tokens so far + a slot: a call's first part (the job's log
holds it apart from its arguments: hearth.contract.coalesce) closes the call before it in
slots 0 and 1 and opens its own in slot 2, and an arguments delta takes slot 3; the closing
events follow the last token. So a stream resumed with `starting_after` numbers its events
as the first one did, and every delta comes exactly once.
"""

from collections.abc import Sequence
from typing import Any

from api.conversations.schemas import Status, call_item, call_item_id, file_citations
from api.responses.store import StoredResponse
from hearth.contract import (
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    Event,
    StartedEvent,
    TokenEvent,
    ToolCall,
    ToolCallEvent,
)
from hearth.lifecycle import JobStatus, status_of

Final = DoneEvent | ErrorEvent
_STATUS = {
    JobStatus.QUEUED: "queued", JobStatus.RUNNING: "in_progress", JobStatus.COMPLETED: "completed",
    JobStatus.CANCELLED: "cancelled", JobStatus.FAILED: "failed", JobStatus.TIMED_OUT: "failed",
}
_ITEM_STATUS: dict[str, Status] = {"completed": "completed", "in_progress": "in_progress"}  # else `incomplete`
STARTED_SEQ = 1  # response.in_progress; then output_item.added, content_part.added
TEXT_SEQ = 3  # a delta's number is this plus the answer's tokens so far
CALL_SEQ, CALL_STRIDE = 4, 4  # a call's events: CALL_SEQ + CALL_STRIDE x tokens so far + slot


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


def call_output(record: StoredResponse, call: ToolCall, n: int, status: Status) -> dict[str, Any]:
    """The answer's call `n` as a `function_call` output item."""
    return call_item(call, call_item_id(record.job_id, n), status).model_dump()


def _output(record: StoredResponse, status: str, text: str, final: Final | None, started: bool, calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    item_status = _ITEM_STATUS.get(status, "incomplete")
    if calls:
        return [call_output(record, call, n, item_status) for n, call in enumerate(calls)]
    if not started or (record.tools and not text):  # offered tools, the answer is a message once it has words
        return []
    return [message_item(record, text, item_status, final)] if text or final is None or isinstance(final, DoneEvent) else []


def response_object(record: StoredResponse, job_status: JobStatus, text: str, final: Final | None, *, started: bool | None = None,
                    calls: Sequence[ToolCall] = ()) -> dict[str, Any]:
    """The `response`; `started` (default: the job has left the queue) says whether its
    output message exists yet; `calls`, the function calls its answer made (its output then)."""
    status = _status(job_status, final)
    started = job_status != JobStatus.QUEUED if started is None else started
    output = _output(record, status, text, final, started, calls)
    return {
        "id": record.id, "object": "response", "created_at": record.created_at, "model": record.model, "status": status,
        "background": record.background, "error": _error(final),
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": record.instructions, "max_output_tokens": record.max_output_tokens, "metadata": record.metadata,
        "output": output, "parallel_tool_calls": record.parallel_tool_calls, "previous_response_id": record.previous_response_id,
        "conversation": {"id": record.conversation} if record.conversation else None,
        "temperature": record.temperature, "top_p": record.top_p, "text": {"format": record.text_format},
        "tool_choice": record.tool_choice, "tools": record.tools, "truncation": "disabled", "usage": _usage(final),
    }


def ended(record: StoredResponse, text: str, final: Final, calls: Sequence[ToolCall] = ()) -> dict[str, Any]:
    """The response of an ended job, from its final event (whose status the lifecycle gave it)."""
    status = status_of(final)
    assert status is not None
    return response_object(record, status, text, final, started=True, calls=calls)


class ResponseEvents:
    """Folds a response's job events into Responses stream events, each with its number."""

    def __init__(self, record: StoredResponse):
        self._record = record
        self._parts: list[str] = []
        self.calls: list[ToolCall] = []  # the answer's calls so far, their arguments as far as they came
        self.tokens = 0  # answer tokens so far
        self.opened = False  # the output message was announced

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def created(self) -> list[tuple[int, dict[str, Any]]]:
        return self._numbered(0, [{"type": "response.created", "response": response_object(self._record, JobStatus.QUEUED, "", None)}])

    def add(self, event: Event) -> list[tuple[int, dict[str, Any]]]:
        """The stream events of one job event, numbered; [] for those that have none
        (trimming and queue position go to the client as SSE comments instead)."""
        if isinstance(event, StartedEvent):
            progress = {"type": "response.in_progress", "response": response_object(self._record, JobStatus.RUNNING, "", None)}
            return self._numbered(STARTED_SEQ, [progress, *([] if self._record.tools else self._opening())])
        if isinstance(event, TokenEvent):
            self._parts.append(event.text)
            self.tokens += event.tokens
            opening = [] if self.opened else self._numbered(STARTED_SEQ + 1, self._opening())
            delta = {"type": "response.output_text.delta", **self._where(), "delta": event.text, "logprobs": []}
            return [*opening, *self._numbered(TEXT_SEQ + self.tokens, [delta])]
        if isinstance(event, ToolCallEvent):
            self.tokens += event.tokens
            base = CALL_SEQ + CALL_STRIDE * self.tokens
            out: list[tuple[int, dict[str, Any]]] = []
            if event.id is not None:
                closing = self._call_closing("completed")
                self.calls.append(ToolCall(id=event.id, name=event.name or "", arguments=""))
                added = {"type": "response.output_item.added", "output_index": len(self.calls) - 1,
                         "item": call_output(self._record, self.calls[-1], len(self.calls) - 1, "in_progress")}
                out += self._numbered(base + 2 - len(closing), [*closing, added])
            if event.arguments and self.calls:
                n = len(self.calls) - 1
                self.calls[n] = self.calls[n].model_copy(update={"arguments": self.calls[n].arguments + event.arguments})
                delta = {"type": "response.function_call_arguments.delta", "item_id": call_item_id(self._record.job_id, n),
                         "output_index": n, "delta": event.arguments}
                out += self._numbered(base + 3, [delta])
            return out
        if isinstance(event, (DoneEvent, ErrorEvent)):
            response = ended(self._record, self.text, event, self.calls)
            kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(response["status"], "response.failed")
            if self.calls:
                status = _ITEM_STATUS.get(response["status"], "incomplete")
                return self._numbered(CALL_SEQ + CALL_STRIDE * (self.tokens + 1), [*self._call_closing(status), {"type": kind, "response": response}])
            closing = []
            if self.opened and response["output"]:
                item = response["output"][0]
                part = item["content"][0]
                closing = [
                    *({"type": "response.output_text.annotation.added", **self._where(), "annotation_index": n, "annotation": a}
                      for n, a in enumerate(part["annotations"])),
                    {"type": "response.output_text.done", **self._where(), "text": self.text, "logprobs": []},
                    {"type": "response.content_part.done", **self._where(), "part": part},
                    {"type": "response.output_item.done", "output_index": 0, "item": item},
                ]
            return self._numbered(TEXT_SEQ + self.tokens + 1, [*closing, {"type": kind, "response": response}])
        return []

    def replay(self, text: str, final: Final, calls: Sequence[ToolCall] = ()) -> list[tuple[int, dict[str, Any]]]:
        """The events of an answer whose log has expired, from its filed outcome."""
        tokens = final.usage.completion_tokens if isinstance(final, DoneEvent) else 1
        answered = bool(text or calls) or isinstance(final, DoneEvent)
        parts: list[Event] = [TokenEvent(text=text, tokens=max(tokens, 1))] if text else []
        for n, call in enumerate(calls):  # a token each for the calls' first parts, the rest for the last arguments
            rest = max(tokens - len(calls), 0) if n == len(calls) - 1 else 0
            parts += [ToolCallEvent(index=n, id=call.id, name=call.name, tokens=1), ToolCallEvent(index=n, arguments=call.arguments, tokens=rest)]
        return [*(self.add(StartedEvent(worker="")) if answered else []), *(e for part in parts for e in self.add(part)), *self.add(final)]

    def _opening(self) -> list[dict[str, Any]]:
        self.opened = True
        return [{"type": "response.output_item.added", "output_index": 0, "item": message_item(self._record, "", "in_progress")},
                {"type": "response.content_part.added", **self._where(), "part": text_part("")}]

    def _call_closing(self, status: Status) -> list[dict[str, Any]]:
        """The events that end the latest call (none before the first)."""
        if not self.calls:
            return []
        n, call = len(self.calls) - 1, self.calls[-1]
        item = call_output(self._record, call, n, status)
        return [{"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": n, "name": call.name,
                 "arguments": call.arguments},
                {"type": "response.output_item.done", "output_index": n, "item": item}]

    def _where(self) -> dict[str, Any]:
        return {"item_id": f"msg_{self._record.job_id}", "output_index": 0, "content_index": 0}

    @staticmethod
    def _numbered(first: int, events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
        return [(first + i, {**event, "sequence_number": first + i}) for i, event in enumerate(events)]
