"""`POST /v1/chat/completions`: one RQ job per request, streamed back as OpenAI chunks."""

import json
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.chat import rendering as fmt
from api.chat.limits import check_request
from api.chat.schemas import ChatCompletionRequest
from api.chat.service import prepare_chat, queue_chat, wait_for_answer
from api.conversations.schemas import turn_items
from api.dependencies import CurrentUser, Documents, Jobs, QuotaCheck, RedisDep, Settings, Turns
from api.errors import error_responses
from api.jobs.service import JobService
from hearth.contract import DoneEvent, ErrorEvent, TokenEvent, ToolCallEvent
from hearth.job_record import JobRecord
from hearth.sse import hearth_comment

router = APIRouter(prefix="/v1", tags=["chat"], responses=error_responses(400, 401, 404, 409, 413, 429, 500, 503))
QUESTION_HEADER = "X-Conversation-Item-Id"  # a conversation turn's stored question: what `replace_from` names later


async def _stream(
    jobs: JobService, job: JobRecord, include_usage: bool, draining: Callable[[], bool], legacy: bool = False,
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
                yield {"data": fmt.chunk(job.id, job.created, job.model, {}, fmt.finish_reason(event, legacy), fmt.citations(event))}
                if include_usage:
                    yield {"data": fmt.usage_chunk(job.id, job.created, job.model, event)}
                yield {"data": "[DONE]"}
            elif isinstance(event, ErrorEvent):
                finished = True
                yield {"data": json.dumps(fmt.error_of(event).body())}
            else:
                yield ServerSentEvent(comment=hearth_comment(event))
    finally:
        if not finished and not draining():  # the client left (not the api stopping)
            await jobs.left(job)


@router.post("/chat/completions", response_model=None,
             responses={200: {"description": "A `chat.completion`, or with `stream` its chunks as server-sent events.",
                              "content": {"text/event-stream": {}}}})
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, jobs: Jobs, user: CurrentUser, redis: RedisDep, settings: Settings,
    turns: Turns, quota: QuotaCheck, documents: Documents,
) -> JSONResponse | EventSourceResponse:
    check_request(body, settings)  # before any document is read
    # Inline files read here are deleted again if the request is refused before its job is queued.
    async with documents.attaching(user.name, body.file_parts(), settings.job_ttl_s) as attached:
        chat = await prepare_chat(body, user.name, jobs, redis, settings, attached, turns, documents)
        # A turn stored in a conversation (Hearth's `conversation`) stores what is new: its question,
        # with the documents it attached, or the results of the calls the last answer made.
        question = turn_items(chat.turn)
        async with turns.taking(user.name, body.conversation, question, chat.payload.job_id, chat.basis):
            job = await queue_chat(jobs, quota, chat, user.name, body.conversation)
    headers = {"X-Job-Id": job.id, **({QUESTION_HEADER: question[0].id} if question else {})}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventSourceResponse(_stream(jobs, job, include_usage, lambda: bool(request.app.state.draining), body.legacy_functions),
                                   ping=settings.sse_ping_s, headers=headers)
    answer = await wait_for_answer(jobs, job, request, settings.poll_s)
    return JSONResponse(answer.completion(job.id, job.created, job.model, body.legacy_functions), headers=headers)
