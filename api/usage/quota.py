"""The quota check every way of asking for work calls before it queues a job (chat
completions, responses, batch lines; embeddings alike): one Lua script that checks what the
person used and holds against their limits and, in the same step, holds this job's share,
so requests arriving at the same instant cannot both slip past a limit.

What a job holds while it waits or runs: its `max_tokens` (or `QUOTA_HOLD_TOKENS` when it sets
none) against the token limits, and one place against `jobs_at_once`. A job is admitted while
used + held stays under each limit; once it ends, its worker has counted what it really used
(hearth.usage) and its hold lapses. An answer already running when its owner crosses a limit
finishes: the limit refuses the next request, it never cuts one short. A hold needs no release
where its job ends: the script drops those whose job has ended (or is gone, after a grace for a
job being queued); a batch line, whose job is deleted once its result is filed, and a job the
queue refused release theirs.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis as AsyncRedis

from api.errors import HearthError
from api.usage.store import Quota, QuotaStore, UsageStore
from hearth.contract import JOB_KEY
from hearth.usage import DAY_KEPT_S, MONTH_KEPT_S, TOTAL, Counter, UsageClock, day_of, field, period_keys

log = logging.getLogger(__name__)

HELD_KEY = "hearth:quota:held:{user}"  # hash: job id -> "<tokens held>:<redis time held at>"
HOLD_GRACE_S = 60  # a hold whose job hash is not written yet (it is being queued) stays this long
JOBS_AT_ONCE_RETRY_S = 5

# KEYS: the day's usage hash, the month's, the user's holds. ARGV: job hash prefix, job id,
# tokens to hold, limits (tokens per day, per month, jobs at once, batch lines per day; -1:
# none), 1 if a batch line, its model's batch lines field, the holds' TTL, the grace, the
# total tokens and batch lines fields, the day and month hashes' TTLs. Returns '' when
# admitted (the hold written, a batch line counted), else the name of the limit reached.
_ADMIT = """
local now = tonumber(redis.call('TIME')[1])
local held, jobs = 0, 0
local holds = redis.call('HGETALL', KEYS[3])
for i = 1, #holds, 2 do
  local tokens, since = string.match(holds[i + 1], '(%d+):(%d+)')
  local status = redis.call('HGET', ARGV[1] .. holds[i], 'status')
  if status == 'queued' or status == 'running' or (not status and now - tonumber(since) < tonumber(ARGV[11])) then
    held, jobs = held + tonumber(tokens), jobs + 1
  else
    redis.call('HDEL', KEYS[3], holds[i])
  end
end
local function over(key, fld, limit, extra)
  limit = tonumber(limit)
  return limit >= 0 and tonumber(redis.call('HGET', key, fld) or '0') + extra >= limit
end
if over(KEYS[1], ARGV[12], ARGV[4], held) then return 'tokens_per_day' end
if over(KEYS[2], ARGV[12], ARGV[5], held) then return 'tokens_per_month' end
if tonumber(ARGV[6]) >= 0 and jobs >= tonumber(ARGV[6]) then return 'jobs_at_once' end
if ARGV[8] == '1' then
  if over(KEYS[1], ARGV[13], ARGV[7], 0) then return 'batch_lines_per_day' end
  for _, key in ipairs({KEYS[1], KEYS[2]}) do
    redis.call('HINCRBY', key, ARGV[13], 1)
    redis.call('HINCRBY', key, ARGV[9], 1)
  end
  redis.call('EXPIRE', KEYS[1], ARGV[14])
  redis.call('EXPIRE', KEYS[2], ARGV[15])
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3] .. ':' .. now)
redis.call('EXPIRE', KEYS[3], ARGV[10])
return ''
"""

_WHAT = {
    "tokens_per_day": "your tokens for today", "tokens_per_month": "your tokens for this month",
    "jobs_at_once": "the requests you may have waiting or running at once", "batch_lines_per_day": "your batch lines for today",
}


class QuotaExceeded(HearthError):
    def __init__(self, limit: str, value: int, resets_at: datetime | None, retry_after_s: int):
        when = "when one of them ends" if resets_at is None else f"it resets at {resets_at:%Y-%m-%d %H:%M} {resets_at.tzname()}"
        super().__init__(429, f"You have used {_WHAT[limit]} ({limit} = {value}); {when}.", "rate_limit_error",
                         "quota_exceeded", headers={"Retry-After": str(retry_after_s)})
        self.limit, self.resets_at, self.retry_after_s = limit, resets_at, retry_after_s


@dataclass(frozen=True)
class QuotaGate:
    redis: AsyncRedis
    quotas: QuotaStore
    usage: UsageStore
    hold_tokens: int  # held by a job that sets no max_tokens
    ttl_s: int  # a job's longest life: no hold outlives it

    @property
    def clock(self) -> UsageClock:
        return self.usage.clock

    async def admit(self, user: str, job_id: str, model: str, max_tokens: int | None, batch_line: bool = False) -> None:
        """Hold this job's share of `user`'s quota, or raise QuotaExceeded (429)."""
        quota = await self.quotas.effective(user)
        if quota == Quota() and not batch_line:
            return  # nothing to enforce: no round trip
        moment = await self.usage.now()
        day, month = period_keys(user, moment)
        limits = [-1 if v is None else v for v in (quota.tokens_per_day, quota.tokens_per_month, quota.jobs_at_once, quota.batch_lines_per_day)]
        refused = await self.redis.eval(
            _ADMIT, 3, day, month, HELD_KEY.format(user=user), JOB_KEY.format(job_id=""), job_id, max_tokens or self.hold_tokens,
            *limits, int(batch_line), field(model, Counter.BATCH_LINES), self.ttl_s, HOLD_GRACE_S,
            field(TOTAL, Counter.QUOTA_TOKENS), field(TOTAL, Counter.BATCH_LINES), DAY_KEPT_S, MONTH_KEPT_S)
        if refused:
            limit = refused.decode()
            value = getattr(quota, limit)
            resets = None if limit == "jobs_at_once" else (self.clock.next_month(moment) if limit == "tokens_per_month" else self.clock.next_day(moment))
            wait = JOBS_AT_ONCE_RETRY_S if resets is None else max(1, round((resets - moment).total_seconds()))
            log.info("quota reached", extra={"limit": limit, "day": day_of(moment)})
            raise QuotaExceeded(limit, value, resets, wait)

    async def release(self, user: str, job_id: str) -> None:
        """Drop a hold whose job was not queued after all (the queue refused it)."""
        await self.redis.hdel(HELD_KEY.format(user=user), job_id)
