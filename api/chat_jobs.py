"""Turning a chat request into a queued job: the checks, routing, fit and fair admission that
every way of asking for an answer shares (chat completions, responses)."""

import asyncio
import uuid
from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis as AsyncRedis

from api.errors import HearthError
from api.jobs import JobInfo, JobService, QueueFull
from api.limits import check_for_worker, check_request
from api.openai_format import Answer
from api.routing import model_map
from api.schemas import ChatCompletionRequest
from api.settings import ApiSettings
from hearth.contract import EmbeddingPayload, JobPayload, Sink


@dataclass(frozen=True)
class PreparedChat:
    payload: JobPayload
    queue_model: str  # whose queues it waits in (api.routing)


async def prepare_chat(body: ChatCompletionRequest, owner: str, jobs: JobService, redis: AsyncRedis, settings: ApiSettings) -> PreparedChat:
    """The job for `body`, checked (400), routed (404) and counted against its model's window
    (400 `context_length_exceeded`), before anything is stored or queued."""
    check_request(body, settings)
    route = (await model_map(redis, settings)).route(body.model)
    if route.worker:
        check_for_worker(body, route.worker)
    payload = JobPayload(job_id=uuid.uuid4().hex, messages=body.contract_messages(), params=body.sampling(), model=route.model, user=owner)
    # Only a chat that might not fit is counted exactly now; with no worker of its model up
    # nobody could count it, and the worker checks again before it generates.
    if route.served and not (route.worker and route.worker.surely_fits(payload.messages, payload.params.max_tokens)):
        fit = await jobs.check_fit(route.model, payload.messages, payload.params.max_tokens)
        if fit is not None and not fit.fits:
            raise HearthError(400, fit.message, code="context_length_exceeded", param="messages")
    return PreparedChat(payload, route.queue_model)


async def queue_chat(jobs: JobService, chat: PreparedChat, owner: str, conversation: str | None = None,
                     sink: Sink | None = None) -> JobInfo:
    return await queue_job(jobs, chat.payload, owner, chat.queue_model, conversation, sink)


async def queue_job(jobs: JobService, payload: JobPayload | EmbeddingPayload, owner: str, queue_model: str,
                    conversation: str | None = None, sink: Sink | None = None) -> JobInfo:
    """Admits the job in its fair place (api.queueing), or 429 with Retry-After."""
    try:
        return await jobs.submit(payload, owner, queue_model, conversation, sink)
    except QueueFull as exc:
        raise HearthError(429, str(exc), "rate_limit_error", "rate_limit_exceeded",
                          headers={"Retry-After": str(exc.retry_after_s)}) from None


async def wait_for_answer(jobs: JobService, job: JobInfo, request: Request, poll_s: float) -> Answer:
    """The job's whole answer, for a non-streaming client. One that leaves cancels its job,
    unless the job's result is filed (a conversation's turn, a stored response): that goes on."""
    answer = Answer()

    async def collect() -> None:
        async for _, event in jobs.events(job):
            if answer.add(event):
                return
        raise AssertionError("event stream ended without a final event")

    collecting = asyncio.ensure_future(collect())
    try:
        cancelled = False
        # A non-streaming client is only seen leaving by polling; its job's cancelled event
        # then ends `collect`.
        while not (await asyncio.wait({collecting}, timeout=poll_s))[0]:
            if not cancelled and job.sink is None and await request.is_disconnected():
                cancelled = True
                await jobs.cancel(job)
        collecting.result()
        return answer
    finally:
        collecting.cancel()
