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
# that pauses nobody: an embedding job), the holder's own queue ('' when the job's
# conversation has no holder to wait for: api.jobs.state_routing), RQ's set of queues, then the
# holders' queues of the model, whose jobs count towards the caps. ARGV: job id, its owner,
# per-user cap, global cap, job hash prefix (every waiting job's owner is in its hash), the
# hash's TTL, the longest wait (s), the holder's queue's name and how long the job may wait
# there (s), then the new hash's fields and values. Admits the job (writes its hash, `queued`,
# with its start deadline in Redis's time, and tells the model's workers, so a batch line
# gives way) or not, in the one round trip. A job with a holder goes to its queue only when
# nobody waits in the shared one (so it is next in line anyway and passes nobody). Returns
# {1-based position, 1 if it went to the holder's queue}; a position of -1 when its owner is
# at the cap, -2 when the queue is. Background jobs (JobRecord.background: a document's chunk
# embeddings, which nobody waits for) count towards neither cap and take no turn: a request
# goes ahead of those waiting at the end, so uploads never make anyone's requests 429 or wait.
_FAIR_INSERT = """
local ids, behind = {}, nil
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if redis.call('HGET', ARGV[5] .. id, 'background') == '1' then
    behind = behind or id
  else
    ids[#ids + 1] = id
    behind = nil
  end
end
local held = {}
for k = 6, #KEYS do
  for _, id in ipairs(redis.call('LRANGE', KEYS[k], 0, -1)) do held[#held + 1] = id end
end
if #ids + #held >= tonumber(ARGV[4]) then return {-2, 0} end
local owners, mine = {}, 0
for i, id in ipairs(ids) do
  owners[i] = redis.call('HGET', ARGV[5] .. id, 'owner') or ''
  if owners[i] == ARGV[2] then mine = mine + 1 end
end
for _, id in ipairs(held) do
  if redis.call('HGET', ARGV[5] .. id, 'owner') == ARGV[2] then mine = mine + 1 end
end
if mine >= tonumber(ARGV[3]) then return {-1, 0} end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], 'status', 'queued', 'not_after', t[1] + tonumber(ARGV[7]), unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[2], ARGV[6])
if KEYS[3] ~= '' then redis.call('PUBLISH', KEYS[3], ARGV[1]) end
if KEYS[4] ~= '' and #ids == 0 then
  redis.call('HSET', KEYS[2], 'queue', ARGV[8], 'hold_until', t[1] + t[2] / 1e6 + tonumber(ARGV[9]))
  redis.call('SADD', KEYS[5], KEYS[4])
  return {redis.call('RPUSH', KEYS[4], ARGV[1]), 1}
end
local rounds = {}
for i, id in ipairs(ids) do
  local round = rounds[owners[i]] or 0
  rounds[owners[i]] = round + 1
  if round > mine then
    redis.call('LINSERT', KEYS[1], 'BEFORE', id, ARGV[1])
    return {i, 0}
  end
end
if behind then redis.call('LINSERT', KEYS[1], 'BEFORE', behind, ARGV[1]) else redis.call('RPUSH', KEYS[1], ARGV[1]) end
return {#ids + 1, 0}
"""

REJECTED_USER_CAP = -1
REJECTED_QUEUE_FULL = -2


@dataclass(frozen=True)
class Hold:
    """A turn that may wait in its state's holder's own queue (api.jobs.state_routing)."""

    queue: str  # the holder's queue
    hold_s: float  # how long it may wait there


@dataclass(frozen=True)
class Admission:
    record: JobRecord  # written only if admitted
    ttl_s: int
    max_wait_s: int
    preempt_channel: str
    hold: Hold | None = None
    counted: tuple[str, ...] = ()  # the model's holders' queues: their jobs count towards the caps


class FairQueue(Queue):
    """An RQ queue whose push is the fair insert. RQ's `enqueue_job` saves the job and calls
    `push_job_id` inside one pipeline; `admit` wraps it, so the caller reads the script's
    verdict, [position, routed], from the pipeline's last result."""

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
        hold = admission.hold
        counted = [queue_key(q) for q in admission.counted]
        pipeline.eval(_FAIR_INSERT, 5 + len(counted), self.key, job_key(job_id), admission.preempt_channel,
                      queue_key(hold.queue) if hold else "", Queue.redis_queues_keys, *counted,
                      job_id, admission.record.owner, self._per_user, self._total, _OWNER_PREFIX, admission.ttl_s,
                      admission.max_wait_s, hold.queue if hold else "", hold.hold_s if hold else 0, *fields)
