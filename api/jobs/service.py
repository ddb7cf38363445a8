"""Jobs as the api sees them: enqueue, read status, cancel, and follow their event streams."""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq.job import Job
from starlette.concurrency import run_in_threadpool

from api.chat.rendering import Answer
from api.jobs.live import RESYNC, Follower, follow
from api.jobs.queueing import REJECTED_QUEUE_FULL, REJECTED_USER_CAP, Admission, FairQueue, queue_key
from api.jobs.state_routing import count, route_turn
from api.metrics.exposition import record_ended_by_api
from api.models.workers import live_workers
from api.settings import ApiSettings
from hearth.contract import (
    ANY_MODEL,
    CANCEL_CHANNEL,
    FINAL_EVENTS,
    METRICS_KEY,
    START_ID,
    CountReply,
    CountRequest,
    EmbeddingPayload,
    ErrorCode,
    ErrorEvent,
    Event,
    FitReply,
    FitRequest,
    JobPayload,
    Message,
    QueuedEvent,
    QueueKind,
    Sink,
    ToolUse,
    cancel_key,
    coalesce,
    count_key,
    decode_event,
    decode_live,
    events_key,
    fit_key,
    held_queue,
    job_of,
    preempt_channel,
    queue_holder,
    queue_name,
    stream_id,
)
from hearth.contract import queue_model as model_of
from hearth.job_record import JobRecord, enqueue, read_field, read_record, rq_job, rq_queue
from hearth.lifecycle import apply_events_args, redis_seconds
from hearth.logs import bind
from hearth.metrics import ModelCounter, RouteCounter, model_field
from hearth.redis_client import stream_entries, text

log = logging.getLogger(__name__)

LOG_PAGE = 1000  # entries per read of a job's log
ETA_FLOOR_S = 0.1  # the estimates' resolution


class QueueFull(Exception):
    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobService:
    def __init__(self, redis: AsyncRedis, rq_redis: Redis, settings: ApiSettings):
        self._redis, self._rq_redis, self._settings = redis, rq_redis, settings
        self._queues: dict[str, FairQueue] = {}  # reused: RQ caches the server version per queue

    async def submit(self, payload: JobPayload | EmbeddingPayload, owner: str, queue_model: str, conversation: str | None = None,
                     sink: Sink | None = None) -> JobRecord:
        """Queue the chat (or embedding job, in its own queue) in its fair place among
        `queue_model`'s, or raise QueueFull (its owner's or everyone's cap). With
        `conversation`, its answer is stored there when it ends (api.jobs.filing), whoever is
        watching; `sink` files it elsewhere (a stored response)."""
        s = self._settings
        chat = isinstance(payload, JobPayload)
        queue = queue_name(QueueKind.INTERACTIVE if chat else QueueKind.EMBEDDING, queue_model)
        max_tokens = payload.params.max_tokens or 0 if isinstance(payload, JobPayload) else 0
        if conversation is not None:
            sink = sink or Sink.CONVERSATION
        record = JobRecord(id=payload.job_id, owner=owner, model=payload.model, created=int(time.time()), queue=queue,
                           max_tokens=max_tokens, sink=sink, conversation=conversation)
        # A chat makes a batch line or an embedding job of its model give way; an embedding job waits its turn.
        admission = Admission(record, s.job_ttl_s, s.max_queue_wait_s, preempt_channel(queue_model) if chat else "")
        hold = None
        if isinstance(payload, JobPayload) and queue_model != ANY_MODEL:
            # A conversation's turn may wait for the worker holding its history's state
            # (api.jobs.state_routing); the model's holders' queues count towards the caps.
            workers = [w for w in await live_workers(self._redis) if queue_model in w.serves()]
            hold = await route_turn(self._redis, queue_model, payload.messages, workers)
            admission = replace(admission, hold=hold, counted=tuple(held_queue(queue_model, w.name) for w in workers))
        verdict, routed = await run_in_threadpool(self._enqueue, payload, queue, admission)
        if verdict == REJECTED_USER_CAP:
            mine = [i + 1 for i, owner_ in enumerate(await self._owners(queue)) if owner_ == owner]
            raise QueueFull(
                f"You already have {s.max_waiting_per_user} requests waiting; wait for one to start.",
                await self._retry_after(queue, mine[0] if mine else 1),
            )
        if verdict == REJECTED_QUEUE_FULL:
            raise QueueFull(f"Hearth is busy: {s.max_queued} requests are already waiting.", await self._retry_after(queue, 1))
        bind(job_id=payload.job_id)  # the rest of this request's log lines name its job
        if hold is not None:
            await count(self._redis, RouteCounter.HOLDER if routed else RouteCounter.FALLBACK)
            if routed:
                record = record.model_copy(update={"queue": hold.queue})
        log.info("job queued", extra={"queue": record.queue, "position": verdict})
        return record

    async def submit_background(self, payload: EmbeddingPayload, owner: str) -> None:
        """Queue a job nobody waits for (the embedding of a new document's chunks) at the end
        of its model's embedding queue: outside the waiting caps, which bound people's requests,
        and with no deadline to start but its record's lifetime."""
        queue = rq_queue(queue_name(QueueKind.EMBEDDING, payload.model), self._rq_redis)
        record = JobRecord(id=payload.job_id, owner=owner, model=payload.model, created=int(time.time()), queue=queue.name,
                           background=True)

        def push() -> None:
            with self._rq_redis.pipeline() as pipe:
                pipe.multi()  # RQ's enqueue expects a transaction begun
                enqueue(pipe, queue, record, payload, self._settings.job_ttl_s)
                pipe.execute()

        await run_in_threadpool(push)
        log.info("job queued", extra={"queue": queue.name, "job_id": payload.job_id})

    def _enqueue(self, payload: JobPayload | EmbeddingPayload, queue_name_: str, admission: Admission) -> tuple[int, bool]:
        s = self._settings
        queue = self._queues.get(queue_name_)
        if queue is None:
            queue = self._queues[queue_name_] = FairQueue(queue_name_, self._rq_redis, s.max_waiting_per_user, s.max_queued)
        job = rq_job(queue, payload, s.job_ttl_s)
        pipe = self._rq_redis.pipeline()
        queue.admit(job, admission, pipe)
        verdict, routed = map(int, pipe.execute()[-1])
        if verdict < 0:
            job.delete()  # RQ's copy; Hearth's hash was never written
        return verdict, bool(routed)

    async def _owners(self, queue: str) -> list[str]:
        ids = await self._redis.lrange(queue_key(queue), 0, -1)
        return [owner or "" for owner in await read_field(self._redis, [job_of(text(rq_id)) for rq_id in ids], "owner")]

    async def wait_estimate(self, queue: str, position: int) -> float | None:
        """Seconds until the job at `position` starts: the remaining tokens of the jobs running
        on the workers that serve the queue's model and the budgets of the jobs ahead, at those
        workers' recent speed, plus a load when none of them holds the model now; None before
        any speed is known."""
        model, holder = model_of(queue), queue_holder(queue)
        workers = [w for w in await live_workers(self._redis)
                   if (model == ANY_MODEL or model in w.serves()) and holder in (None, w.name)]  # a holder's queue: it alone
        speed = sum(w.tps for w in workers)
        if not speed:
            return None
        default = max((w.default_max_tokens for w in workers), default=0)
        ahead = await self._redis.lrange(queue_key(queue), 0, position - 2)
        budgets = [int(b or 0) or default for b in await read_field(self._redis, [job_of(text(rq_id)) for rq_id in ahead], "max_tokens")]
        loaded = model == ANY_MODEL or any(model in w.loaded_models() for w in workers)
        return (sum(w.remaining for w in workers) + sum(budgets)) / speed + (0.0 if loaded else await self.load_s(model) or 0.0)

    async def load_s(self, model: str) -> float | None:
        """How long `model` took to load on average, as workers counted it (None before its first
        load: a loading event tells the waiting job when it starts)."""
        loads, seconds = await self._redis.hmget(
            METRICS_KEY, [model_field(ModelCounter.LOADS, model), model_field(ModelCounter.LOAD_SECONDS, model)])
        return float(seconds) / int(loads) if loads and int(loads) and seconds else None

    async def _retry_after(self, queue: str, position: int) -> int:
        eta = await self.wait_estimate(queue, position)
        return max(1, round(eta)) if eta is not None else 5

    async def check_fit(self, model: str, messages: list[Message], max_tokens: int | None, tools: ToolUse | None = None) -> FitReply | None:
        """A worker of `model` counts the prompt with the model's tokenizer; None if none
        answered in time (the worker checks again before it generates)."""
        raw = await self._ask(fit_key(model), lambda reply_to, expires_at: FitRequest(
            reply_to=reply_to, expires_at=expires_at, messages=messages, max_tokens=max_tokens, tools=tools).model_dump_json())
        return None if raw is None else FitReply.model_validate_json(raw)

    async def count_tokens(self, model: str, texts: list[str]) -> list[int] | None:
        """Each text's tokens as a worker that embeds with `model` counts them; None if none
        answered in time (the worker checks again before it embeds)."""
        raw = await self._ask(count_key(model), lambda reply_to, expires_at: CountRequest(
            reply_to=reply_to, expires_at=expires_at, texts=texts).model_dump_json())
        return None if raw is None else CountReply.model_validate_json(raw).tokens

    async def _ask(self, key: str, request: Callable[[str, float], str]) -> bytes | str | None:
        """Push `request(reply_to, expires_at)` to a worker's list `key`, and wait for its reply."""
        reply_to = f"hearth:fit:reply:{uuid.uuid4().hex}"
        wait = self._settings.fit_check_s
        expires_at = redis_seconds(await self._redis.time()) + wait
        await self._redis.rpush(key, request(reply_to, expires_at))
        popped = await self._redis.blpop([reply_to], timeout=wait)
        return None if popped is None else popped[1]

    async def get(self, job_id: str) -> JobRecord | None:
        return await read_record(self._redis, job_id)

    async def queue_now(self, job: JobRecord) -> str:
        """The queue `job` waits in now: a turn that waited for its state's holder may have
        moved to the shared queue since `job` was read (api.jobs.state_routing)."""
        [queue] = await read_field(self._redis, [job.id], "queue")
        return queue or job.queue

    async def position(self, job: JobRecord, queue: str | None = None) -> int | None:
        """1 = next to run in `queue` (by default the one it waits in now); None once the job
        has left it."""
        index = await self._redis.lpos(queue_key(queue or await self.queue_now(job)), job.attempt)
        return index + 1 if isinstance(index, int) else None  # a list only comes with COUNT

    async def cancel(self, job: JobRecord) -> None:
        """Remove a queued job, or flag a running one; the worker stops it within a token."""
        await self._redis.set(cancel_key(job.id), 1, ex=self._settings.job_ttl_s)
        if not await self.withdraw(job, ErrorEvent(code=ErrorCode.CANCELLED, message="The request was cancelled.")):
            await self._redis.publish(CANCEL_CHANNEL, job.id)

    async def left(self, job: JobRecord) -> None:
        """The client waiting for `job` went away before its end: free the worker for someone
        who is waiting, unless the job's result is filed (a conversation's turn, a stored
        response): that goes on, its answer is kept, and the client can re-attach."""
        if job.sink is None:
            await asyncio.shield(self.cancel(job))

    async def withdraw(self, job: JobRecord, reason: ErrorEvent) -> bool:
        """Take a job out of its queue before any worker has it, ending it with `reason`."""
        if not await self._redis.lrem(queue_key(await self.queue_now(job)), 0, job.attempt):
            return False
        await self.end(job.id, reason)
        await self._redis.delete(Job.key_for(job.attempt))  # RQ's copy: no worker will ever read it
        return True

    async def end(self, job_id: str, event: ErrorEvent) -> bool:
        """End a job that no worker will end (withdrawn, or its worker lost); whether this call
        ended it (only one can: see hearth.lifecycle)."""
        ended = await self._redis.eval(*apply_events_args(job_id, [event], self._settings.job_ttl_s))
        if ended:
            await record_ended_by_api(self._redis, job_id, event)
        return bool(ended)

    async def _waiting(self, job: JobRecord, shown: QueuedEvent | None) -> QueuedEvent | None:
        """A fresh `queued` event if the job still waits and its place or estimate changed."""
        queue = await self.queue_now(job)
        position = await self.position(job, queue)
        if position is None:
            return None
        eta = await self.wait_estimate(queue, position)
        # A job still in line waits at least for a worker to take it, even when one is idle
        # (it reports no work left just before it dequeues): never an estimate of zero.
        eta = None if eta is None else max(round(eta, 1), ETA_FLOOR_S)
        if shown is None or shown.position != position or (eta is not None and abs(eta - (shown.eta_s or 0)) >= 2):
            return QueuedEvent(position=position, eta_s=eta)
        return None

    async def events(self, job: JobRecord, after: str = START_ID) -> AsyncIterator[tuple[str | None, Event]]:
        """Every event of `job` after stream id `after`, as (id, event), until the final one.

        Tokens that arrived together are coalesced into one event (id = the last one's), so a
        slow reader catches up in large steps instead of falling further behind. While the job
        waits, ephemeral `queued` events (id None) report its place and estimated wait. Jobs
        that no worker will end (its worker died, it waited too long) are ended by the reaper
        (api.jobs.reaper), whether or not anybody follows them.
        """
        async with follow(self._redis, job.id, self._settings.poll_s) as follower:
            last, shown, started = after, None, False
            entries = await self._read_log(job.id, last)  # after subscribing: nothing falls between
            while True:
                if entries:
                    started = True
                    for entry_id, event in coalesce(entries):
                        yield entry_id, event
                        if event.type in FINAL_EVENTS:
                            return
                    last = entries[-1][0]
                elif not started:
                    update = await self._waiting(job, shown)
                    if update is not None:
                        shown = update
                        yield None, update
                entries = await self._next(job.id, follower, last)

    async def _next(self, job_id: str, follower: Follower, last: str) -> list[tuple[str, Event]]:
        """The entries after `last`: as published while the messages follow on from it; read
        from the log when one may be missing (a gap, a reconnect, or nothing heard for a while)."""
        messages = await follower.next(self._settings.poll_s)
        entries: list[tuple[str, Event]] = []
        for message in messages:
            if message != RESYNC:
                prev, appended = decode_live(message)
                if stream_id(appended[-1][0]) <= stream_id(last):
                    continue  # already read from the log
                if prev == last:
                    entries += appended
                    last = appended[-1][0]
                    continue
            return entries + await self._read_log(job_id, last)
        return entries if messages else await self._read_log(job_id, last)

    async def log(self, job_id: str) -> list[tuple[str, Event]]:
        """Every event of the job's log so far, as (stream id, event), one entry each."""
        return await self._read_log(job_id, START_ID)

    async def answer(self, job_id: str) -> Answer:
        """The job's answer so far, from its log."""
        answer = Answer()
        for _, event in await self._read_log(job_id, START_ID):
            if answer.add(event):
                break
        return answer

    async def _read_log(self, job_id: str, after: str) -> list[tuple[str, Event]]:
        entries: list[tuple[str, Event]] = []
        while True:
            page = stream_entries(await self._redis.xrange(events_key(job_id), min=f"({after}", count=LOG_PAGE))
            entries += [(entry_id.decode(), decode_event(fields)) for entry_id, fields in page]
            if len(page) < LOG_PAGE:
                return entries
            after = entries[-1][0]


def dump(info: JobRecord) -> dict[str, object]:
    return {"id": info.id, "object": "hearth.job", "status": info.status.value, "model": info.model,
            "created_at": info.created, "queue": info.queue}

