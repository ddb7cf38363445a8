"""A job's record, the hash `hearth:job:{id}`, and the RQ job each attempt of it runs as.

`JobRecord` is the only code that writes or reads the hash besides the lifecycle script
(hearth.lifecycle), which alone changes what happens to a job after it is queued: its
`status`, a `<status>_at` time per change (Redis time), the running `worker`, the `rq_id` of
its current attempt and its `retries`. The api writes a record when it queues a job: a chat or
response through the fair insert (api.jobs.queueing), a batch line through the batch runner.
`rq_job` makes the RQ job of any attempt: the first of a chat, a batch line, and a requeue.
"""

import uuid
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT
from rq import Queue
from rq.job import Job

from hearth.contract import (
    ATTEMPT_SEPARATOR,
    EMBED_FUNC,
    GENERATE_FUNC,
    RQ_SERIALIZER,
    EmbeddingPayload,
    JobPayload,
    Sink,
    job_key,
)
from hearth.lifecycle import JobStatus
from hearth.redis_client import text, text_hash


class JobRecord(BaseModel):
    """What Hearth knows of a job besides its events. Fields an older api did not write take
    their defaults; the `<status>_at` times are in the hash but not read here."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    owner: str
    model: str  # the model that answers it
    created: int  # unix seconds, the api's clock: for showing and for wait times only
    queue: str  # the RQ queue it waits in
    status: JobStatus = JobStatus.QUEUED
    max_tokens: int = 0  # the answer's budget (0: the worker's default), for wait estimates
    not_after: float | None = None  # Redis time after which no worker may start it
    rq_id: str = ""  # the RQ job of its current attempt ("": the job id, a first attempt)
    worker: str | None = None  # the worker running it, or that last ran it
    hold_until: float | None = None  # waiting in its state's holder's queue: Redis time it may wait there until
    retries: int = 0  # times a batch line went back to its queue after losing its worker
    # Where its result goes when it ends, whoever is watching (api.jobs.filing); such a job
    # outlives its client.
    sink: Sink | None = None
    conversation: str | None = None  # a chat turn: the conversation its answer is stored in
    batch: str | None = None  # a batch line: its batch, custom_id and 1-based line number
    custom_id: str | None = None
    line: int | None = None
    response: str | None = None  # a /v1/responses batch line: its StoredResponse JSON
    legacy_functions: bool = False  # a chat batch line with the legacy `functions`: it answers with `function_call`
    encoding_format: str | None = None  # a /v1/embeddings batch line: how its vectors are written
    inputs: int | None = None  # and how many it embeds
    background: bool = False  # nobody waits for it (a document's chunk embeddings): outside the fair insert's caps and turns

    @property
    def attempt(self) -> str:
        """The RQ id of the current attempt."""
        return self.rq_id or self.id

    @property
    def key(self) -> str:
        return job_key(self.id)

    def fields(self) -> dict[FieldT, EncodableT]:
        """The hash as first written, at enqueue (values Redis stores as text)."""
        dumped = self.model_dump(mode="json", exclude={"id"}, exclude_defaults=True)
        # Redis takes no booleans: a flag is stored as 1 (and read back by pydantic).
        return {name: int(value) if isinstance(value, bool) else value
                for name, value in {"status": self.status.value, **dumped}.items() if value is not None}

    @classmethod
    def of(cls, job_id: str, fields: Mapping[str, str]) -> "JobRecord":
        return cls.model_validate({**fields, "id": job_id})


async def read_record(redis: AsyncRedis, job_id: str) -> JobRecord | None:
    fields = await redis.hgetall(job_key(job_id))
    return JobRecord.of(job_id, text_hash(fields)) if fields else None


async def read_fields(redis: AsyncRedis, job_ids: Sequence[str], *names: str) -> list[tuple[str | None, ...]]:
    """Some fields of each job's record, in one round trip (None where the record is gone)."""
    unknown = [name for name in names if name not in JobRecord.model_fields]
    if unknown:
        raise ValueError(f"no job record field {unknown[0]!r}")
    pipe = redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(job_key(job_id), list(names))
    return [tuple(None if value is None else text(value) for value in values) for values in await pipe.execute()]


async def read_field(redis: AsyncRedis, job_ids: Sequence[str], name: str) -> list[str | None]:
    """One field of each job's record, in one round trip (None where the record is gone)."""
    return [value for (value,) in await read_fields(redis, job_ids, name)]


def rq_queue(name: str, redis: Redis) -> Queue:
    return Queue(name, connection=redis, serializer=RQ_SERIALIZER)


def job_func(payload: JobPayload | EmbeddingPayload) -> str:
    """The job function that runs `payload`."""
    return EMBED_FUNC if isinstance(payload, EmbeddingPayload) else GENERATE_FUNC


def rq_job(queue: Queue, payload: JobPayload | EmbeddingPayload, ttl_s: int, rq_id: str | None = None) -> Job:
    """The RQ job of one attempt of `payload` (the job id for a first attempt), not yet saved
    or queued. Its description is what RQ logs: the default would show the messages."""
    return queue.create_job(
        job_func(payload),
        args=(payload.model_dump(),),
        job_id=rq_id or payload.job_id,
        description=f"job {payload.job_id}",
        # The worker ends over-long generations itself, between two tokens; RQ's timer would
        # interrupt it anywhere, without telling the client.
        timeout=-1,
        result_ttl=ttl_s,
        failure_ttl=ttl_s,
    )


def enqueue(pipe: Pipeline, queue: Queue, record: JobRecord, payload: JobPayload | EmbeddingPayload, ttl_s: int) -> None:
    """Write `record` and push the first attempt of `payload` at the end of `queue`, in `pipe`:
    for a job that waits its turn without the fair insert's caps (a batch line, the embedding of
    a new document's chunks)."""
    pipe.hset(record.key, mapping=record.fields())
    pipe.expire(record.key, ttl_s)
    queue.enqueue_job(rq_job(queue, payload, ttl_s), pipeline=pipe)


def save_attempt(redis: Redis, queue: str, payload: JobPayload | EmbeddingPayload, ttl_s: int) -> tuple[str, str]:
    """Save the RQ job of another attempt of `payload` (a paused or orphaned batch line), not
    yet queued: (queue key, RQ id). The lifecycle's requeue pushes it, in the same script that
    moves the job back to `queued`; RQ's record of the attempt that stopped stays as RQ left it.
    RQ ids allow letters, digits, `_` and `-`: `<job id>-<suffix>`."""
    q = rq_queue(queue, redis)
    job = rq_job(q, payload, ttl_s, f"{payload.job_id}{ATTEMPT_SEPARATOR}{uuid.uuid4().hex[:8]}")
    job.save()
    job.cleanup(ttl=ttl_s)  # gone in time if the requeue is refused (the job ended meanwhile)
    return q.key, job.id
