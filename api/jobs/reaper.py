"""The reaper: ends the jobs no worker will end, whether or not anybody is watching them.

- A running job whose worker's heartbeat expired: a chat ends with `worker_lost`; a batch line
  goes back to the front of its queue (a new attempt, from scratch) up to `BATCH_LINE_RETRIES`
  times, then fails with a reason.
- A chat still queued past its start deadline ends with `timeout` (a worker would refuse it
  anyway, but none may be coming).

Every api process has one; the housekeeping lease (api.jobs.housekeeping) lets one act at a time.
Deadlines and liveness are compared in
Redis's time (hearth.lifecycle), so no host's clock matters.
"""

import logging

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from starlette.concurrency import run_in_threadpool

from api.jobs.queueing import known_queues, queue_key
from api.jobs.service import JobService
from api.settings import ApiSettings
from hearth.contract import (
    EMBED_FUNC,
    RQ_SERIALIZER,
    RUNNING_KEY,
    WORKERS_KEY,
    EmbeddingPayload,
    ErrorCode,
    ErrorEvent,
    JobPayload,
    QueueKind,
    RequeuedEvent,
    job_of,
)
from hearth.job_record import JobRecord, read_field, save_attempt
from hearth.lifecycle import apply_events_args, redis_seconds
from hearth.redis_client import text, texts

log = logging.getLogger(__name__)

class Reaper:
    def __init__(self, redis: AsyncRedis, rq_redis: Redis, jobs: JobService, settings: ApiSettings):
        self._redis, self._rq_redis, self._jobs, self._settings = redis, rq_redis, jobs, settings

    async def sweep(self) -> None:
        """One round: the jobs of dead workers, then chats past their start deadline."""
        now = redis_seconds(await self._redis.time())
        running = await self._redis.hgetall(RUNNING_KEY)
        if running:
            pipe = self._redis.pipeline(transaction=False)
            for worker in running.values():
                pipe.zscore(WORKERS_KEY, worker)
            for (job_id, worker), expires in zip(running.items(), await pipe.execute()):
                if expires is None or float(expires) < now:
                    await self._orphaned(text(job_id), text(worker))
        for queue in await known_queues(self._redis):
            if not queue.startswith(QueueKind.BATCH.value):  # chats and embedding jobs: a person waits
                await self._expire_waiting(queue, now)

    async def _orphaned(self, job_id: str, worker: str) -> None:
        job = await self._jobs.get(job_id)
        if job is None:  # expired meanwhile
            await self._redis.hdel(RUNNING_KEY, job_id)
            return
        retries = job.retries
        batch = job.queue.startswith(QueueKind.BATCH.value)
        if batch and retries < self._settings.batch_line_retries and await self._requeue(job):
            log.warning("worker %s lost: batch line requeued", worker, extra={"job_id": job_id, "retries": retries + 1})
            return
        message = (f"The worker serving this line stopped {retries + 1} times; giving up." if batch
                   else "The worker serving this request stopped; please retry.")
        if await self._jobs.end(job_id, ErrorEvent(code=ErrorCode.WORKER_LOST, message=message)):
            log.warning("worker %s lost: job ended", worker, extra={"job_id": job_id})

    async def _requeue(self, job: JobRecord) -> bool:
        """A new attempt, from the start: the model state of the old one died with its worker.
        False if the old attempt's arguments are gone (it cannot run again)."""
        ttl = self._settings.job_ttl_s
        push = await run_in_threadpool(self._save_attempt, job)
        if push is None:
            return False
        args = apply_events_args(job.id, [RequeuedEvent(reason="worker_lost")], ttl, push=push, count="retries")
        await self._redis.eval(*args)
        return True

    def _save_attempt(self, job: JobRecord) -> tuple[str, str] | None:
        try:
            old = Job.fetch(job.attempt, connection=self._rq_redis, serializer=RQ_SERIALIZER)
        except NoSuchJobError:
            return None
        # An embedding job keeps the vectors of its `done` inputs (written when it paused); a
        # chat's model state died with its worker: it starts over.
        payload = (EmbeddingPayload.model_validate(old.args[0]) if old.func_name == EMBED_FUNC
                   else JobPayload.model_validate(old.args[0]).model_copy(update={"resume": None}))
        return save_attempt(self._rq_redis, job.queue, payload, self._settings.job_ttl_s)

    async def _expire_waiting(self, queue: str, now: float) -> None:
        ids = texts(await self._redis.lrange(queue_key(queue), 0, -1))
        if not ids:
            return
        wait = self._settings.max_queue_wait_s
        for rq_id, not_after in zip(ids, await read_field(self._redis, [job_of(rq_id) for rq_id in ids], "not_after")):
            if not_after is not None and float(not_after) < now:
                job = await self._jobs.get(job_of(rq_id))
                if job is not None:
                    await self._jobs.withdraw(job, ErrorEvent(code=ErrorCode.TIMEOUT, message=(
                        f"No worker could take the request within {wait} s.")))
