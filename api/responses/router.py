"""`/v1/responses`: OpenAI's Responses API. Each response is a Hearth chat job (api.chat.service),
rendered as Responses objects and events (api.responses.objects); stored ones are kept in
api.responses.store and can be fetched, resumed, cancelled and deleted by their owner."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.chat.limits import check_request
from api.chat.service import prepare_chat, queue_chat, wait_for_answer
from api.conversations.schemas import AnyItem, cursor_page, not_made
from api.dependencies import (
    CurrentUser,
    Documents,
    Jobs,
    QuotaCheck,
    RedisDep,
    Responses,
    Settings,
    Turns,
)
from api.errors import HearthError, error_responses
from api.jobs.service import JobService
from api.responses.objects import ResponseEvents, ended, response_object
from api.responses.schemas import ResponseCreateRequest, as_responses_error
from api.responses.service import current, history, not_found, owned, stop
from api.responses.store import StoredResponse
from hearth.contract import FINAL_EVENTS, START_ID, Event, Sink
from hearth.job_record import JobRecord
from hearth.lifecycle import JobStatus
from hearth.sse import hearth_comment

router = APIRouter(prefix="/v1/responses", tags=["responses"], responses=error_responses(400, 401, 404, 413, 500, 503))
SSE: dict[int | str, dict[str, Any]] = {200: {"description": "A `response`, or with `stream` its events as server-sent events.", "content": {"text/event-stream": {}}}}
CANCEL_WAIT_S = 5.0  # a cancelled job ends within a token; the answer shows it ended


async def _stream(jobs: JobService, job: JobRecord | None, record: StoredResponse, after: int,
                  draining: Callable[[], bool]) -> AsyncIterator[dict[str, str] | ServerSentEvent]:
    """The response's events numbered above `after`. What the job's log holds already goes
    one log entry per event, never coalesced: whatever event a client saw last ended at an
    entry, so resuming after its number (here, or in the client's helper, which reads the
    stream again and skips what it saw) repeats and misses nothing. The rest follows live;
    queue position and trimming go as SSE comments, which OpenAI clients skip."""
    events = ResponseEvents(record)

    def shown(numbered: list[tuple[int, dict[str, Any]]]) -> list[dict[str, str]]:
        return [{"event": e["type"], "data": json.dumps(e)} for n, e in numbered if n > after]

    def sent(event: Event) -> list[dict[str, str] | ServerSentEvent]:
        numbered = events.add(event)
        return [*shown(numbered)] if numbered else [ServerSentEvent(comment=hearth_comment(event))]

    finished = False
    try:
        for message in shown(events.created()):
            yield message
        if job is None:  # the job's log expired: replay the filed outcome
            assert record.outcome is not None
            finished = True
            for message in shown(events.replay(record.outcome.text, record.outcome.final, record.outcome.calls)):
                yield message
            return
        logged = await jobs.log(job.id)
        for _, event in logged:
            for item in sent(event):
                yield item
            if event.type in FINAL_EVENTS:
                finished = True
                return
        async for _, event in jobs.events(job, logged[-1][0] if logged else START_ID):
            finished = event.type in FINAL_EVENTS
            for item in sent(event):
                yield item
    finally:
        # The client left (not the api stopping). A stored response goes on: its outcome is
        # filed, and the client can resume with `starting_after`.
        if job is not None and not finished and not draining():
            await jobs.left(job)


@router.post("", response_model=None, responses={**SSE, **error_responses(409, 429)})
async def create_response(
    body: ResponseCreateRequest, request: Request, jobs: Jobs, user: CurrentUser, redis: RedisDep, settings: Settings,
    turns: Turns, store: Responses, quota: QuotaCheck, documents: Documents,
) -> JSONResponse | EventSourceResponse:
    if body.background and not body.store:
        raise HearthError(400, "A background response must be stored: background needs store true.", param="background")
    conv_id = body.conversation_id
    earlier, basis = await history(body, store, jobs, turns, documents, user)
    # Inline files read here are deleted again if the request is refused before its job is queued.
    async with AsyncExitStack() as reading:
        try:
            asked = body.to_chat(earlier)
            check_request(asked, settings)  # before any document is read
            # Inline files live as long as what answers from them: the stored response, or the job.
            attached = await reading.enter_async_context(documents.attaching(
                user.name, body.file_parts(), settings.response_retention_s if body.store else settings.job_ttl_s))
            chat = await prepare_chat(asked, user.name, jobs, redis, settings,
                                      [*([[]] if body.instructions else []), *(m.documents for m in [*earlier, *body.input_messages(earlier, attached)])])
        except HearthError as exc:
            raise as_responses_error(exc) from None
        record = body.stored(chat.payload.job_id, int(time.time()), chat.payload.model, earlier, attached)
        # A call sent back that the conversation holds already is not stored again, whatever its item id.
        async with turns.taking(user.name, conv_id, not_made(record.input, earlier), record.job_id, basis):
            try:
                if body.store:
                    await store.create(user.name, record)
                # A stored response's outcome is filed by its record (and from there into its
                # conversation); an unstored one in a conversation is filed as a chat turn is.
                job = await queue_chat(jobs, quota, chat, user.name, None if body.store else conv_id, Sink.RESPONSE if body.store else None)
            except Exception:  # refused a place in the queue, or Redis failed: nothing was stored
                await store.delete(user.name, record.job_id)
                raise
    headers = {"X-Job-Id": job.id}
    if body.stream:
        return EventSourceResponse(_stream(jobs, job, record, -1, lambda: bool(request.app.state.draining)),
                                   ping=settings.sse_ping_s, headers=headers)
    if body.background:
        return JSONResponse(response_object(record, JobStatus.QUEUED, "", None), headers=headers)
    answer = await wait_for_answer(jobs, job, request, settings.poll_s)
    assert answer.final is not None
    return JSONResponse(ended(record, answer.text, answer.final, answer.tool_calls()), headers=headers)


@router.get("/{response_id}", response_model=None, responses=SSE)
async def get_response(
    response_id: str, request: Request, jobs: Jobs, user: CurrentUser, store: Responses, settings: Settings,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1, le=2**53, description="With `stream`, resume after this event's `sequence_number`.")] = None,
) -> JSONResponse | EventSourceResponse:
    """The stored response; with `stream=true`, its events again (from `starting_after`)."""
    record = await owned(store, user, response_id)
    if not stream:
        return JSONResponse(await current(jobs, record))
    job = await jobs.get(record.job_id)
    if job is None and record.outcome is None:
        raise not_found(record.id, why="has expired")
    after = -1 if starting_after is None else starting_after
    return EventSourceResponse(_stream(jobs, job, record, after, lambda: bool(request.app.state.draining)),
                               ping=settings.sse_ping_s, headers={"X-Job-Id": record.job_id})


@router.post("/{response_id}/cancel")
async def cancel_response(response_id: str, jobs: Jobs, user: CurrentUser, store: Responses) -> dict[str, Any]:
    """Stops a queued or running response (it ends `cancelled`); an ended one is returned as it is."""
    record = await owned(store, user, response_id)
    job = await stop(jobs, record)
    if job is not None:
        try:
            async with asyncio.timeout(CANCEL_WAIT_S):
                async for _ in jobs.events(job):
                    pass
        except TimeoutError:
            pass  # still stopping: the answer shows it in progress
    return await current(jobs, record)


@router.delete("/{response_id}")
async def delete_response(response_id: str, jobs: Jobs, user: CurrentUser, store: Responses, turns: Turns) -> dict[str, Any]:
    """Deletes the stored response; one still queued or running is cancelled first, as nobody could see its answer."""
    record = await owned(store, user, response_id)
    await stop(jobs, record)
    if not await store.delete(user.name, record.job_id):
        raise not_found(response_id)
    if record.conversation is not None:  # its answer will not be filed there: the conversation is free
        await turns.release(user.name, record.conversation, record.job_id)
    return {"id": record.id, "object": "response", "deleted": True}


@router.get("/{response_id}/input_items")
async def list_input_items(
    response_id: str, user: CurrentUser, store: Responses,
    after: Annotated[str | None, Query(description="The id of the last item of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, object]:
    """The response's own input items (OpenAI's `ResponseItemList`), newest first by default."""
    record = await owned(store, user, response_id)
    items: list[AnyItem] = record.input if order == "asc" else record.input[::-1]
    if after is not None:
        ids = [item.id for item in items]
        if after not in ids:
            raise HearthError(400, f"No item {after!r} in response {response_id!r}.", param="after")
        items = items[ids.index(after) + 1:]
    return cursor_page(items[:limit], len(items) > limit)
