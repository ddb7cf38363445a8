"""`POST /v1/chat/completions`: one RQ job per request, streamed back as OpenAI chunks."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from api import openai_format as fmt
from api.chat_jobs import prepare_chat, queue_chat, wait_for_answer
from api.conversation_schemas import MessageItem, message
from api.conversations import ConversationStore
from api.dependencies import Conversations, CurrentUser, Jobs, RedisDep, Settings
from api.errors import HearthError, error_responses
from api.filing import settle
from api.jobs import JobInfo, JobService
from api.schemas import ChatCompletionRequest
from hearth.contract import DoneEvent, ErrorEvent, TokenEvent, ToolCallEvent

router = APIRouter(prefix="/v1", tags=["chat"], responses=error_responses(400, 401, 404, 409, 413, 429, 500, 503))


async def _stream(
    jobs: JobService, job: JobInfo, include_usage: bool, draining: Callable[[], bool], legacy: bool = False,
) -> AsyncIterator[dict[str, str] | ServerSentEvent]:
    """OpenAI chunks; Hearth's own events (queue position, trimming) go as SSE comments,
    which OpenAI clients skip. Ends with `[DONE]`, or with an error object on failure."""
    finished = False
    try:
        yield {"data": fmt.chunk(job.id, job.created, job.model, {"role": "assistant", "content": ""})}
        async for _, event in jobs.events(job):
            if isinstance(event, TokenEvent):
                if event.text:
                    yield {"data": fmt.chunk(job.id, job.created, job.model, {"content": event.text})}
            elif isinstance(event, ToolCallEvent):
                if event.id is not None or event.arguments:
                    yield {"data": fmt.chunk(job.id, job.created, job.model, fmt.call_delta(event, legacy))}
            elif isinstance(event, DoneEvent):
                finished = True
                yield {"data": fmt.chunk(job.id, job.created, job.model, {}, fmt.finish_reason(event, legacy))}
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
        # api itself is stopping, nor for a job whose result is filed (a conversation's turn):
        # the job goes on, its answer is stored, and the client can re-attach.)
        if not finished and not draining() and job.sink is None:
            await asyncio.shield(jobs.cancel(job))


async def _store_question(body: ChatCompletionRequest, conversations: ConversationStore, jobs: JobService, owner: str,
                          job_id: str) -> MessageItem | None:
    """The turn's question, stored in its conversation (the caller's own, else 404) before
    it is queued, with `job_id` marked as writing its answer; None for a plain OpenAI call.
    409 `conversation_busy` while another answer is being written there."""
    if body.conversation is None:
        return None
    last = body.messages[-1]
    if last.role != "user":
        raise HearthError(400, "A turn stored in a conversation ends with the user's message.", param="messages")
    await settle(jobs, conversations, owner, body.conversation)
    [asked] = await conversations.add_items(owner, body.conversation, [message("user", last.text())], answering=job_id)
    return asked


@router.post("/chat/completions", response_model=None,
             responses={200: {"description": "A `chat.completion`, or with `stream` its chunks as server-sent events.",
                              "content": {"text/event-stream": {}}}})
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, jobs: Jobs, user: CurrentUser, redis: RedisDep, settings: Settings,
    conversations: Conversations,
) -> JSONResponse | EventSourceResponse:
    chat = await prepare_chat(body, user.name, jobs, redis, settings)
    asked = await _store_question(body, conversations, jobs, user.name, chat.payload.job_id)
    try:
        job = await queue_chat(jobs, chat, user.name, body.conversation)
    except Exception:  # refused a place in the queue, or Redis failed: the turn never happened
        if asked is not None and body.conversation is not None:
            await conversations.withdraw(user.name, body.conversation, [asked], chat.payload.job_id)
        raise
    headers = {"X-Job-Id": job.id}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventSourceResponse(_stream(jobs, job, include_usage, lambda: bool(request.app.state.draining), body.legacy_functions),
                                   ping=settings.sse_ping_s, headers=headers)
    answer = await wait_for_answer(jobs, job, request, settings.poll_s)
    return JSONResponse(answer.completion(job.id, job.created, job.model, body.legacy_functions), headers=headers)
