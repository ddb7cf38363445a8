"""The one owner of a job's status: every change goes through one Lua script, atomically with
the events that announce it, so the api, the worker and the reaper can never disagree, and an
ended job is never resurrected (a late event for it is refused, not appended).

    queued ──start──> running ──done/error──> completed | failed | cancelled | timed_out
      │                  │
      │                  └──requeue (a paused or orphaned batch line)──> queued
      └──withdraw (cancel, queue deadline)──> cancelled | timed_out

Times are Redis's (`TIME`), never a host's own: a worker on another machine with a skewed clock
is neither declared dead nor allowed to start a job past its deadline. A job's hash (written at
enqueue, see `hearth.job_record.JobRecord`) holds `status`, `<status>_at` times, the running
`worker`, the `not_after` start deadline and, for jobs whose end somebody must act on (a batch
line, a conversation turn), a `sink`: their ids go onto `ENDED_KEY` as they end, and
`NUDGE_KEY` wakes the api's housekeeping to file them.
"""

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from hearth.contract import (
    ENDED_KEY,
    NUDGE_KEY,
    RUNNING_KEY,
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    RequeuedEvent,
    StartedEvent,
    cancel_key,
    events_key,
    job_key,
    live_channel,
)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})
_BY_CODE = {ErrorCode.CANCELLED: JobStatus.CANCELLED, ErrorCode.TIMEOUT: JobStatus.TIMED_OUT}


def status_of(event: BaseModel) -> JobStatus | None:
    """The status an event moves its job to; None for events within a status (tokens...)."""
    if isinstance(event, StartedEvent):
        return JobStatus.RUNNING
    if isinstance(event, RequeuedEvent):
        return JobStatus.QUEUED
    if isinstance(event, DoneEvent):
        return JobStatus.COMPLETED
    if isinstance(event, ErrorEvent):
        return _BY_CODE.get(event.code, JobStatus.FAILED)
    return None


# The transitions, in one table the script reads: from -> allowed targets.
_ALLOWED = {
    JobStatus.QUEUED: [JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.TIMED_OUT, JobStatus.FAILED],
    JobStatus.RUNNING: [JobStatus.QUEUED, *sorted(TERMINAL)],
}
_ALLOWED_LUA = "{" + ", ".join(
    f"{source.value} = {{" + ", ".join(f"{t.value} = true" for t in targets) + "}" for source, targets in _ALLOWED.items()
) + "}"

# The shared body: `apply(status, json)` applies one event to the job, or refuses it (returns
# false) when the job is gone, ended, or not in a state the event can follow. Events within a
# status (no status of their own) are only taken while the job runs.
_PRELUDE = """
local job, events, channel, opts = KEYS[1], KEYS[2], KEYS[3], cjson.decode(ARGV[1])
local ALLOWED = %s
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%%06d', t[2])
local lines = nil
local function apply(new, event)
  local status = redis.call('HGET', job, 'status')
  if not status then return false end
  if new == '' then
    if status ~= 'running' then return false end
  else
    if not (ALLOWED[status] and ALLOWED[status][new]) then return false end
    redis.call('HSET', job, 'status', new, new .. '_at', now)
    if new == 'running' then
      redis.call('HSET', job, 'worker', opts.worker)
      redis.call('HSET', KEYS[4], opts.id, opts.worker)
    else
      redis.call('HDEL', KEYS[4], opts.id)
    end
    if new == 'queued' and opts.push_key then
      redis.call('LPUSH', opts.push_key, opts.push_id)
      redis.call('HSET', job, 'rq_id', opts.push_id)
      if opts.count then redis.call('HINCRBY', job, opts.count, 1) end
    elseif new ~= 'queued' and new ~= 'running' and redis.call('HEXISTS', job, 'sink') == 1 then
      redis.call('RPUSH', KEYS[5], opts.id)
      redis.call('LPUSH', KEYS[6], 1)
      redis.call('LTRIM', KEYS[6], 0, 0)
    end
  end
  if not lines then
    local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
    lines = {last[1] and last[1][1] or '0-0'}
  end
  lines[#lines + 1] = redis.call('XADD', events, '*', 'event', event) .. ' ' .. event
  return true
end
local function publish()
  if lines then
    redis.call('EXPIRE', events, opts.ttl)
    redis.call('PUBLISH', channel, table.concat(lines, '\\n'))
  end
end
""" % _ALLOWED_LUA  # noqa: UP031 -- Lua's own braces make str.format the worse choice

# ARGV: options JSON, then (status or '', event JSON) pairs. Appends the events in order up to
# the first one refused; returns how many were applied. Each published message is the stream
# id before these entries, then "<id> <json>" per entry (event JSON has no raw newlines): a
# reader that subscribes before it reads the log sees an event twice at most (dropped by id),
# never misses one.
APPLY_EVENTS_LUA = _PRELUDE + """
local n = 0
for i = 2, #ARGV, 2 do
  if not apply(ARGV[i], ARGV[i + 1]) then break end
  n = n + 1
end
publish()
return n
"""

# A worker taking a job: it runs unless it was cancelled or its start deadline (Redis time)
# has passed, in which case it ends here. ARGV: options JSON; the started, cancelled and timed
# out events. Returns the status the job is in afterwards (or false when it is gone).
START_LUA = _PRELUDE + """
local not_after = tonumber(redis.call('HGET', job, 'not_after') or '')
if redis.call('EXISTS', KEYS[7]) == 1 then
  apply('running', ARGV[2]); apply('cancelled', ARGV[3])
elseif not_after and tonumber(now) > not_after then
  apply('running', ARGV[2]); apply('timed_out', ARGV[4])
else
  apply('running', ARGV[2])
end
publish()
return redis.call('HGET', job, 'status')
"""


def _keys(job_id: str) -> list[str]:
    return [job_key(job_id), events_key(job_id), live_channel(job_id), RUNNING_KEY, ENDED_KEY, NUDGE_KEY]


def _options(job_id: str, ttl_s: int, worker: str = "", push: tuple[str, str] | None = None, count: str = "") -> str:
    opts: dict[str, Any] = {"id": job_id, "ttl": ttl_s, "worker": worker}
    if push is not None:
        opts["push_key"], opts["push_id"] = push
    if count:
        opts["count"] = count
    return json.dumps(opts)


# EVAL's arguments: the script, how many keys, then the keys and the arguments.
EvalArgs = tuple[str, int, *tuple[str, ...]]


def apply_events_args(
    job_id: str, events: Sequence[BaseModel], ttl_s: int, push: tuple[str, str] | None = None, count: str = ""
) -> EvalArgs:
    """The arguments of EVAL that apply `events` to the job: appended to its log, published,
    and its status moved as they say. `push` (queue key, RQ job id) is pushed to the queue's
    front when a requeue is applied, in the same script, so a requeued job is never lost
    between the two; `count` names a hash field the requeue increments."""
    keys_and_args = [*_keys(job_id), _options(job_id, ttl_s, push=push, count=count)]
    for event in events:
        status = status_of(event)
        keys_and_args += ["" if status is None else status.value, event.model_dump_json()]
    return (APPLY_EVENTS_LUA, 6, *keys_and_args)


def start_args(job_id: str, worker: str, ttl_s: int, timed_out_message: str) -> EvalArgs:
    """The arguments of EVAL that start the job on `worker` (see START_LUA)."""
    events = [
        StartedEvent(worker=worker),
        ErrorEvent(code=ErrorCode.CANCELLED, message="The request was cancelled."),
        ErrorEvent(code=ErrorCode.TIMEOUT, message=timed_out_message),
    ]
    keys_and_args = [*_keys(job_id), cancel_key(job_id), _options(job_id, ttl_s, worker), *(e.model_dump_json() for e in events)]
    return (START_LUA, 7, *keys_and_args)


def redis_seconds(time_reply: tuple[int, int] | list[int]) -> float:
    """Redis's `TIME` reply as unix seconds: the one clock every host compares against."""
    return int(time_reply[0]) + int(time_reply[1]) / 1e6
