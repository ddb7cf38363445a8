"""RQ's queues as the api sees them, and fair admission to the interactive ones: per-user and
global caps, round-robin order.

RQ's queue is a Redis list the worker pops from the head. A new job is not appended: it is
inserted before the first waiting job of a later "round", where a job's round is how many
jobs of its owner wait ahead of it. Users A (3 jobs) and B (then 3 jobs) are served
A1 B1 A2 B2 A3 B3, so nobody can push the others back by sending many requests.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job

from hearth.contract import JOB_KEY, RQ_SERIALIZER, QueueKind, job_key, queue_name
from hearth.job_record import JobRecord
from hearth.redis_client import text

_OWNER_PREFIX = JOB_KEY.format(job_id="")


def queue_key(queue: str) -> str:
    return Queue.redis_queue_namespace_prefix + queue


async def known_queues(redis: AsyncRedis, models: Iterable[str] = (), embedding_models: Iterable[str] = ()) -> list[str]:
    """Every queue RQ has registered (each model's, whether or not a worker serves it now),
    the chat and batch queues of `models` and the embedding queues of `embedding_models`, by
    model, in the order workers read them."""
    prefix = Queue.redis_queue_namespace_prefix
    names = {text(key).removeprefix(prefix) for key in await redis.smembers(Queue.redis_queues_keys)}
    names |= {queue_name(kind, m) for m in models for kind in (QueueKind.INTERACTIVE, QueueKind.BATCH)}
    names |= {queue_name(QueueKind.EMBEDDING, m) for m in embedding_models}
    return sorted(names, key=_by_model)


_KIND_ORDER = {kind.value: i for i, kind in enumerate(QueueKind)}


def _by_model(queue: str) -> tuple[str, int]:
    kind, _, model = queue.partition(":")
    return model, _KIND_ORDER.get(kind, len(_KIND_ORDER))

# KEYS: the queue list, the new job's Hearth hash, the model's preempt channel ('' for a job
# that pauses nobody: an embedding job). ARGV: job id,
# its owner, per-user cap, global cap, job hash prefix (every waiting job's owner is in its
# hash), the hash's TTL, the longest wait (s), then the new hash's fields and values. Admits
# the job (writes its hash, `queued`, with its start deadline in Redis's time, and tells the
# model's workers, so a batch line gives way) or not, in the one round trip. Returns the new
# job's 1-based position, -1 when its owner is at the cap, -2 when the queue is.
_FAIR_INSERT = """
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
if #ids >= tonumber(ARGV[4]) then return -2 end
local owners, mine = {}, 0
for i, id in ipairs(ids) do
  owners[i] = redis.call('HGET', ARGV[5] .. id, 'owner') or ''
  if owners[i] == ARGV[2] then mine = mine + 1 end
end
if mine >= tonumber(ARGV[3]) then return -1 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], 'status', 'queued', 'not_after', t[1] + tonumber(ARGV[7]), unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[2], ARGV[6])
if KEYS[3] ~= '' then redis.call('PUBLISH', KEYS[3], ARGV[1]) end
local rounds = {}
for i, id in ipairs(ids) do
  local round = rounds[owners[i]] or 0
  rounds[owners[i]] = round + 1
  if round > mine then
    redis.call('LINSERT', KEYS[1], 'BEFORE', id, ARGV[1])
    return i
  end
end
redis.call('RPUSH', KEYS[1], ARGV[1])
return #ids + 1
"""

REJECTED_USER_CAP = -1
REJECTED_QUEUE_FULL = -2


@dataclass(frozen=True)
class Admission:
    record: JobRecord  # written only if admitted
    ttl_s: int
    max_wait_s: int
    preempt_channel: str


class FairQueue(Queue):
    """An RQ queue whose push is the fair insert. RQ's `enqueue_job` saves the job and calls
    `push_job_id` inside one pipeline; `admit` wraps it, so the caller reads the script's
    verdict from the pipeline's last result."""

    def __init__(self, name: str, connection: Redis, per_user: int, total: int):
        super().__init__(name, connection=connection, serializer=RQ_SERIALIZER)
        self._per_user, self._total = per_user, total
        self._admissions: dict[str, Admission] = {}  # by job id, for push_job_id (called by RQ)

    def admit(self, job: Job, admission: Admission, pipeline: Pipeline) -> None:
        self._admissions[job.id] = admission
        try:
            self.enqueue_job(job, pipeline=pipeline)
        finally:
            del self._admissions[job.id]

    def push_job_id(self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False) -> None:
        admission = self._admissions.get(job_id)
        if pipeline is None or admission is None:
            raise ValueError("FairQueue pushes only through admit()")
        fields = [item for pair in admission.record.fields().items() for item in pair]
        # EVAL, not a registered Script: a pipeline with scripts asks SCRIPT EXISTS first, an
        # extra round trip per request.
        pipeline.eval(_FAIR_INSERT, 3, self.key, job_key(job_id), admission.preempt_channel, job_id, admission.record.owner,
                      self._per_user, self._total, _OWNER_PREFIX, admission.ttl_s, admission.max_wait_s, *fields)
