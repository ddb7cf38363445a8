"""Fair admission to the interactive queue: per-user and global caps, round-robin order.

RQ's queue is a Redis list the worker pops from the head. A new job is not appended: it is
inserted before the first waiting job of a later "round", where a job's round is how many
jobs of its owner wait ahead of it. Users A (3 jobs) and B (then 3 jobs) are served
A1 B1 A2 B2 A3 B3, so nobody can push the others back by sending many requests.
"""

from redis import Redis
from redis.client import Pipeline
from rq import Queue

from hearth.contract import JOB_KEY

_OWNER_PREFIX = JOB_KEY.format(job_id="")

# KEYS[1] queue list; ARGV: job id, per-user cap, global cap, job hash prefix. The owner of
# every job, the new one included, is in its Hearth job hash.
# Returns the new job's 1-based position, -1 when its owner is at the cap, -2 when the queue is.
_FAIR_INSERT = """
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
if #ids >= tonumber(ARGV[3]) then return -2 end
local owner = redis.call('HGET', ARGV[4] .. ARGV[1], 'owner') or ''
local owners, mine = {}, 0
for i, id in ipairs(ids) do
  owners[i] = redis.call('HGET', ARGV[4] .. id, 'owner') or ''
  if owners[i] == owner then mine = mine + 1 end
end
if mine >= tonumber(ARGV[2]) then return -1 end
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


class FairQueue(Queue):
    """An RQ queue whose push is the fair insert. Used only inside `enqueue_job(…, pipeline=)`,
    so the caller reads the script's verdict from the pipeline's last result."""

    def __init__(self, name: str, connection: Redis, per_user: int, total: int):
        super().__init__(name, connection=connection)
        self._per_user, self._total = per_user, total

    def push_job_id(self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False) -> None:
        if pipeline is None:
            raise ValueError("FairQueue pushes only inside the caller's pipeline")
        # EVAL, not a registered Script: a pipeline with scripts asks SCRIPT EXISTS first, an
        # extra round trip per request.
        pipeline.eval(_FAIR_INSERT, 1, self.key, job_id, self._per_user, self._total, _OWNER_PREFIX)
