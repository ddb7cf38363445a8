"""Jobs as the api sees them: enqueue, read status, cancel, and follow their event streams."""

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq import Queue
from rq.job import Job
from starlette.concurrency import run_in_threadpool

from hearth.contract import (
    CANCEL_CHANNEL,
    FitReply,
    FitRequest,
    Message,
    FINAL_EVENTS,
    GENERATE_FUNC,
    QUEUE_INTERACTIVE,
    ErrorCode,
    ErrorEvent,
    Event,
    EventType,
    JobPayload,
    QueuedEvent,
    TokenEvent,
    cancel_key,
    decode_event,
    encode_event,
    events_key,
    fit_key,
    job_key,
    worker_key,
)
from api.settings import ApiSettings

START_ID = "0-0"  # stream id before the first event: a reader from here sees everything


@dataclass(frozen=True)
class JobInfo:
    id: str
    owner: str
    model: str
    created: int
    queue: str
    status: str  # queued | running | completed | cancelled | failed


class JobService:
    def __init__(self, redis: AsyncRedis, rq_redis: Redis, settings: ApiSettings):
        self._redis, self._rq_redis, self._settings = redis, rq_redis, settings

    def _queue(self, name: str) -> Queue:
        return Queue(name, connection=self._rq_redis)

    async def submit(self, payload: JobPayload, owner: str, queue: str = QUEUE_INTERACTIVE) -> JobInfo:
        job_id = uuid.uuid4().hex
        created = int(time.time())
        ttl = self._settings.job_ttl_s
        await self._redis.hset(  # type: ignore[misc]
            job_key(job_id), mapping={"owner": owner, "model": payload.model, "created": created, "queue": queue}
        )
        await self._redis.expire(job_key(job_id), ttl)
        await run_in_threadpool(
            self._queue(queue).enqueue,
            GENERATE_FUNC,
            payload.model_dump(),
            job_id=job_id,
            description=f"chat {job_id}",  # RQ logs the description; the default shows the messages
            # The worker ends over-long generations itself, between two tokens; RQ's timer
            # would interrupt it anywhere, without telling the client.
            job_timeout=-1,
            result_ttl=ttl,
            failure_ttl=ttl,
        )
        return JobInfo(job_id, owner, payload.model, created, queue, "queued")

    async def check_fit(self, model: str, messages: list[Message], max_tokens: int | None) -> FitReply | None:
        """A worker of `model` counts the prompt with the model's tokenizer; None if none
        answered in time (the worker checks again before it generates)."""
        reply_to = f"hearth:fit:reply:{uuid.uuid4().hex}"
        wait = self._settings.fit_check_s
        request = FitRequest(reply_to=reply_to, expires_at=time.time() + wait, messages=messages, max_tokens=max_tokens)
        await self._redis.rpush(fit_key(model), request.model_dump_json())  # type: ignore[misc]
        popped = await self._redis.blpop([reply_to], timeout=wait)  # type: ignore[misc]
        return None if popped is None else FitReply.model_validate_json(popped[1])

    async def get(self, job_id: str) -> JobInfo | None:
        meta = await self._redis.hgetall(job_key(job_id))  # type: ignore[misc]
        if not meta:
            return None
        decoded = {k.decode(): v.decode() for k, v in meta.items()}
        return JobInfo(
            job_id, decoded["owner"], decoded["model"], int(decoded["created"]), decoded["queue"],
            await self._status(job_id),
        )

    async def _status(self, job_id: str) -> str:
        last = await self._redis.xrevrange(events_key(job_id), count=1)
        if last:
            event = decode_event(last[0][1])
            if event.type == EventType.DONE:
                return "completed"
            if event.type == EventType.ERROR:
                return "cancelled" if event.code == ErrorCode.CANCELLED else "failed"
            return "running"
        rq_status = await self._redis.hget(Job.key_for(job_id), "status")  # type: ignore[misc]
        return "running" if rq_status == b"started" else "queued"

    async def position(self, job_id: str, queue: str) -> int | None:
        """1 = next to run; None once the job has left the queue."""
        index = await self._redis.lpos(Queue.redis_queue_namespace_prefix + queue, job_id)  # type: ignore[misc]
        return None if index is None else int(index) + 1

    async def cancel(self, job: JobInfo) -> None:
        """Remove a queued job, or flag a running one; the worker stops it within a token."""
        await self._redis.set(cancel_key(job.id), 1, ex=self._settings.job_ttl_s)
        removed = await self._redis.lrem(Queue.redis_queue_namespace_prefix + job.queue, 0, job.id)  # type: ignore[misc]
        if removed:
            await self._append(job.id, ErrorEvent(code=ErrorCode.CANCELLED, message="The request was cancelled."))
            await run_in_threadpool(self._mark_cancelled, job.id)
        else:
            await self._redis.publish(CANCEL_CHANNEL, job.id)

    def _mark_cancelled(self, job_id: str) -> None:
        rq_job = Job.fetch(job_id, connection=self._rq_redis)
        rq_job.cancel(remove_from_dependencies=False)

    async def _append(self, job_id: str, event: ErrorEvent) -> None:
        await self._redis.xadd(events_key(job_id), encode_event(event))  # type: ignore[arg-type]
        await self._redis.expire(events_key(job_id), self._settings.job_ttl_s)

    async def _worker_alive(self, job_id: str) -> bool:
        name = await self._redis.hget(Job.key_for(job_id), "worker_name")  # type: ignore[misc]
        return bool(name) and bool(await self._redis.exists(worker_key(name.decode())))

    async def events(self, job: JobInfo, after: str = START_ID) -> AsyncIterator[tuple[str | None, Event]]:
        """Every event of `job` after stream id `after`, as (id, event), until the final one.

        Tokens that arrived together are coalesced into one event (id = the last one's), so a
        slow reader catches up in large steps instead of falling further behind. While the job
        waits, ephemeral `queued` events (id None) report its position when it changes.
        """
        key, last, position = events_key(job.id), after, None
        while True:
            reply = await self._redis.xread({key: last}, count=512, block=int(self._settings.poll_s * 1000))
            if not reply:
                now = await self.position(job.id, job.queue)
                if now is not None and now != position:
                    position = now
                    yield None, QueuedEvent(position=now)
                elif now is None and await self._status(job.id) == "running" and not await self._worker_alive(job.id):
                    await self._append(job.id, ErrorEvent(code=ErrorCode.WORKER_LOST, message="The worker serving this request stopped."))
                continue
            pending: TokenEvent | None = None
            pending_id = last
            for entry_id, fields in reply[0][1]:
                event, entry = decode_event(fields), entry_id.decode()
                if isinstance(event, TokenEvent):
                    pending = event if pending is None else TokenEvent(text=pending.text + event.text, tokens=pending.tokens + event.tokens)
                    pending_id = entry
                    continue
                if pending is not None:
                    yield pending_id, pending
                    pending = None
                yield entry, event
                if event.type in FINAL_EVENTS:
                    return
            if pending is not None:
                yield pending_id, pending
            last = reply[0][1][-1][0].decode()


def dump(info: JobInfo) -> dict[str, object]:
    return {"id": info.id, "object": "hearth.job", "status": info.status, "model": info.model,
            "created_at": info.created, "queue": info.queue}

