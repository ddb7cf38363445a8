"""`POST /v1/chat/completions`: one RQ job per request, streamed back as OpenAI chunks."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from hearth.contract import DoneEvent, ErrorEvent, JobPayload, TokenEvent
from hearth.lifecycle import TERMINAL
from api import openai_format as fmt
from api.conversation_schemas import MessageItem, message
from api.conversations import ConversationStore
from api.dependencies import Conversations, CurrentUser, Jobs, RedisDep, Settings
from api.errors import HearthError, error_responses
from api.filing import file_answer
from api.jobs import JobInfo, JobService, QueueFull
from api.limits import check_for_worker, check_request
from api.schemas import ChatCompletionRequest
from api.routing import model_map

router = APIRouter(prefix="/v1", tags=["chat"], responses=error_responses(400, 401, 404, 409, 413, 429, 500, 503))


async def _stream(
    jobs: JobService, job: JobInfo, include_usage: bool, draining: Callable[[], bool]
) -> AsyncIterator[dict[str, str] | ServerSentEvent]:
    """OpenAI chunks; Hearth's own events (queue position, trimming) go as SSE comments,
    which OpenAI clients skip. Ends with `[DONE]`, or with an error object on failure."""
    finished = False
    try:
        yield {"data": fmt.chunk(job.id, job.created, job.model, {"role": "assistant", "content": ""})}
        async for _, event in jobs.events(job):
            if isinstance(event, TokenEvent):
                yield {"data": fmt.chunk(job.id, job.created, job.model, {"content": event.text})}
            elif isinstance(event, DoneEvent):
                finished = True
                yield {"data": fmt.chunk(job.id, job.created, job.model, {}, event.finish_reason)}
                if include_usage:
                    yield {"data": fmt.usage_chunk(job.id, job.created, job.model, event)}
                yield {"data": "[DONE]"}
            elif isinstance(event, ErrorEvent):
                finished = True
                yield {"data": json.dumps(fmt.error_of(event).body())}
            else:
                yield ServerSentEvent(comment=f"hearth {event.model_dump_json()}")
    finally:
        # The client went away: free the worker for someone who is waiting. (Not when the
        # api itself is stopping, nor for a conversation's turn: the job goes on, its answer
        # is stored, and the client can re-attach.)
        if not finished and not draining() and job.conversation is None:
            await asyncio.shield(jobs.cancel(job))


async def _collect(jobs: JobService, job: JobInfo) -> dict[str, object]:
    answer = fmt.Answer()
    async for _, event in jobs.events(job):
        if answer.add(event):
            return answer.completion(job.id, job.created, job.model)
    raise AssertionError("event stream ended without a final event")


async def _store_question(body: ChatCompletionRequest, conversations: ConversationStore, jobs: JobService, owner: str,
                          job_id: str) -> MessageItem | None:
    """The turn's question, stored in its conversation (the caller's own, else 404) before
    it is queued, with `job_id` marked as writing its answer; None for a plain OpenAI call."""
    if body.conversation is None:
        return None
    last = body.messages[-1]
    if last.role != "user":
        raise HearthError(400, "A turn stored in a conversation ends with the user's message.", param="messages")
    pending = (await conversations.get(owner, body.conversation)).hearth_job_id
    if pending:
        job = await jobs.get(pending)
        if job is not None and job.status not in TERMINAL:
            raise HearthError(409, "An answer is still being written in this conversation; wait for it or stop it.",
                              code="conversation_busy", param="conversation")
        # Ended but not filed yet (housekeeping files it within a round): file it now, so
        # that it comes before this question.
        await file_answer(jobs, conversations, owner, body.conversation, pending)
    [asked] = await conversations.add_items(owner, body.conversation, [message("user", last.text())])
    await conversations.answering(owner, body.conversation, job_id)
    return asked


@router.post("/chat/completions", response_model=None,
             responses={200: {"description": "A `chat.completion`, or with `stream` its chunks as server-sent events.",
                              "content": {"text/event-stream": {}}}})
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, jobs: Jobs, user: CurrentUser, redis: RedisDep, settings: Settings,
    conversations: Conversations,
) -> JSONResponse | EventSourceResponse:
    check_request(body, settings)
    route = (await model_map(redis, settings)).route(body.model)
    if route.worker:
        check_for_worker(body, route.worker)
    payload = JobPayload(job_id=uuid.uuid4().hex, messages=body.contract_messages(), params=body.sampling(), model=route.model, user=user.name)
    # Only a chat that might not fit is counted exactly now; with no worker of its model up
    # nobody could count it, and the worker checks again before it generates.
    if route.served and not (route.worker and route.worker.surely_fits(payload.messages, payload.params.max_tokens)):
        fit = await jobs.check_fit(route.model, payload.messages, payload.params.max_tokens)
        if fit is not None and not fit.fits:
            raise HearthError(400, fit.message, code="context_length_exceeded", param="messages")
    asked = await _store_question(body, conversations, jobs, user.name, payload.job_id)
    try:
        job = await jobs.submit(payload, user.name, route.queue_model, body.conversation)
    except QueueFull as exc:
        if asked is not None and body.conversation is not None:
            await conversations.delete_item(user.name, body.conversation, asked.id)  # the turn never happened
            await conversations.answered(user.name, body.conversation, payload.job_id)
        raise HearthError(429, str(exc), "rate_limit_error", "rate_limit_exceeded",
                          headers={"Retry-After": str(exc.retry_after_s)}) from None
    headers = {"X-Job-Id": job.id}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventSourceResponse(_stream(jobs, job, include_usage, lambda: bool(request.app.state.draining)), ping=settings.sse_ping_s, headers=headers)
    collect = asyncio.ensure_future(_collect(jobs, job))
    try:
        cancelled = False
        while not (await asyncio.wait({collect}, timeout=settings.poll_s))[0]:
            # A non-streaming client is only seen leaving by polling; its job's cancelled
            # event then ends `collect`. A conversation's turn goes on (see _stream).
            if not cancelled and job.conversation is None and await request.is_disconnected():
                cancelled = True
                await jobs.cancel(job)
        return JSONResponse(collect.result(), headers=headers)
    finally:
        collect.cancel()
