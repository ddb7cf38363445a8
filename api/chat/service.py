"""Turning a chat request into a queued job: the checks, routing, fit and fair admission that
every way of asking for an answer shares (chat completions, responses)."""

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from fastapi import Request
from redis.asyncio import Redis as AsyncRedis

from api.chat.limits import check_for_worker
from api.chat.rendering import Answer
from api.chat.schemas import ChatCompletionRequest
from api.chat.tools import unanswered
from api.conversations.turns import Basis, TurnService
from api.documents.service import DocumentService
from api.errors import HearthError
from api.jobs.service import JobService, QueueFull
from api.models.routing import model_map
from api.settings import ApiSettings
from api.usage.quota import QuotaGate
from hearth.contract import EmbeddingPayload, JobPayload, Message, Sink
from hearth.documents import DocumentRef
from hearth.job_record import JobRecord


@dataclass(frozen=True)
class PreparedChat:
    payload: JobPayload
    queue_model: str  # whose queues it waits in (api.models.routing)
    basis: Basis | None = None  # what a turn stored in a conversation continues
    turn: list[Message] = field(default_factory=list)  # that turn's new messages (its question, or results of calls)


async def prepare_chat(body: ChatCompletionRequest, owner: str, jobs: JobService, redis: AsyncRedis, settings: ApiSettings,
                       attached: Sequence[list[DocumentRef]] = (), turns: TurnService | None = None,
                       documents: DocumentService | None = None) -> PreparedChat:
    """The job for `body` (already through `check_request`: the caller checks it before reading
    its documents), routed (404) and counted against its model's window (400
    `context_length_exceeded`), before anything is stored or queued. `attached` holds each of its
    messages' documents (api.documents). A turn stored in a conversation (`conversation`, with
    `turns`) is its instructions, the conversation's stored messages (api.conversations.turns,
    with those of their documents still the owner's), then its question."""
    basis, earlier = None, []
    if body.conversation is not None:
        assert turns is not None and documents is not None, "a conversation's turn is prepared with its turn and document services"
        basis = await turns.basis(owner, body.conversation, body.replace_from)
        earlier = await documents.owned_messages(owner, basis.messages())
    messages = body.contract_messages(made=unanswered(earlier))
    if attached:
        for message, refs in zip(messages, attached, strict=True):
            message.documents = refs
    turn: list[Message] = []
    if basis is not None:
        start = body.turn_start()
        turn = messages[start:]
        messages = [*messages[:start], *earlier, *turn]
    route = (await model_map(redis, settings)).route(body.model)
    if route.worker:
        check_for_worker(body, route.worker)
    payload = JobPayload(job_id=uuid.uuid4().hex, messages=messages, params=body.sampling(), model=route.model, user=owner,
                         tools=body.tool_use())
    # Only a chat that might not fit is counted exactly now (one with tools or documents always:
    # their text is not in its messages); with no worker of its model up nobody could count it,
    # and the worker checks again before it generates.
    surely = (not payload.tools and not any(m.documents for m in payload.messages) and route.worker
              and route.worker.surely_fits(payload.messages, payload.params.max_tokens))
    if route.served and not surely:
        fit = await jobs.check_fit(route.model, payload.messages, payload.params.max_tokens, payload.tools)
        if fit is not None and not fit.fits:
            raise HearthError(400, fit.message, code=fit.code, param="messages")
    return PreparedChat(payload, route.queue_model, basis, turn)


async def queue_chat(jobs: JobService, quota: QuotaGate, chat: PreparedChat, owner: str, conversation: str | None = None,
                     sink: Sink | None = None) -> JobRecord:
    return await queue_job(jobs, quota, chat.payload, owner, chat.queue_model, conversation, sink)


async def queue_job(jobs: JobService, quota: QuotaGate, payload: JobPayload | EmbeddingPayload, owner: str, queue_model: str,
                    conversation: str | None = None, sink: Sink | None = None) -> JobRecord:
    """Admits the job within its owner's quota (api.usage.quota) and in its fair place
    (api.jobs.queueing), or 429 with Retry-After."""
    await quota.admit(owner, payload.job_id, payload.model, payload.params.max_tokens if isinstance(payload, JobPayload) else None)
    try:
        return await jobs.submit(payload, owner, queue_model, conversation, sink)
    except QueueFull as exc:
        await quota.release(owner, payload.job_id)
        raise HearthError(429, str(exc), "rate_limit_error", "rate_limit_exceeded",
                          headers={"Retry-After": str(exc.retry_after_s)}) from None


async def wait_for_answer(jobs: JobService, job: JobRecord, request: Request, poll_s: float) -> Answer:
    """The job's whole answer, for a non-streaming client; one that leaves is told to the job
    service (JobService.left)."""
    answer = Answer()

    async def collect() -> None:
        async for _, event in jobs.events(job):
            if answer.add(event):
                return
        raise AssertionError("event stream ended without a final event")

    collecting = asyncio.ensure_future(collect())
    try:
        left = False
        # A non-streaming client is only seen leaving by polling; its job's cancelled event
        # then ends `collect`.
        while not (await asyncio.wait({collecting}, timeout=poll_s))[0]:
            if not left and await request.is_disconnected():
                left = True
                await jobs.left(job)
        collecting.result()
        return answer
    finally:
        collecting.cancel()
