"""The next attempt of a job that goes back to its queue (a paused or orphaned batch line).

Each attempt is its own RQ job (`<job id>-<suffix>`: RQ ids allow letters, digits, `_`, `-`) carrying the same Hearth job id: RQ's record
of the attempt that stopped stays as RQ left it, and the new one is saved here, then pushed by
hearth.lifecycle's requeue transition in the same script that moves the job back to `queued`.
"""

import uuid

from redis import Redis
from rq import Queue

from hearth.contract import ATTEMPT_SEPARATOR, EMBED_FUNC, GENERATE_FUNC, RQ_SERIALIZER, EmbeddingPayload, JobPayload


def rq_queue(name: str, redis: Redis) -> Queue:
    return Queue(name, connection=redis, serializer=RQ_SERIALIZER)


def job_func(payload: JobPayload | EmbeddingPayload) -> str:
    """The job function that runs `payload`."""
    return EMBED_FUNC if isinstance(payload, EmbeddingPayload) else GENERATE_FUNC


def save_attempt(redis: Redis, queue: str, payload: JobPayload | EmbeddingPayload, ttl_s: int) -> tuple[str, str]:
    """Save an RQ job for another attempt of `payload`, not yet queued: (queue key, RQ id)."""
    q = rq_queue(queue, redis)
    job = q.create_job(
        job_func(payload),
        args=(payload.model_dump(),),
        job_id=f"{payload.job_id}{ATTEMPT_SEPARATOR}{uuid.uuid4().hex[:8]}",
        description=f"job {payload.job_id}",
        timeout=-1,
        result_ttl=ttl_s,
        failure_ttl=ttl_s,
    )
    job.save()
    job.cleanup(ttl=ttl_s)  # gone in time if the requeue is refused (the job ended meanwhile)
    return q.key, job.id
