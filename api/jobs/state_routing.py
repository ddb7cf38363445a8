"""A conversation's next turn goes to the worker that holds its saved state, when waiting for
that worker costs less than evaluating the history again elsewhere.

The worker that answered a chat names itself as its state's holder (hearth.state_routes). For
a new turn, the holder is looked up by its history (`messages[:-1]`). If it is alive, has the
model loaded and will be free before another worker could evaluate the history (the state's
tokens at the workers' measured prefill speed), the turn waits in the holder's own queue, which
it reads before the shared one, for at most that prefill's time; the fair insert sends it
there only when nobody waits in the shared queue (api.jobs.queueing). Housekeeping moves a turn
that waited longer, or whose holder's heartbeat expired, to the front of the shared queue,
where any worker takes it next.
"""

import logging

from redis.asyncio import Redis as AsyncRedis
from rq import Queue

from api.jobs.queueing import Hold, known_queues, queue_key
from hearth.contract import (
    METRICS_KEY,
    WORKERS_KEY,
    Message,
    QueueKind,
    held_queue,
    job_key,
    job_of,
    queue_holder,
    queue_model,
    queue_name,
)
from hearth.heartbeat import WorkerInfo
from hearth.job_record import read_field
from hearth.lifecycle import redis_seconds
from hearth.metrics import RouteCounter
from hearth.redis_client import texts
from hearth.state_routes import StateHolder, state_route_key

log = logging.getLogger(__name__)


async def route_turn(redis: AsyncRedis, model: str, messages: list[Message], workers: list[WorkerInfo]) -> Hold | None:
    """The holder's queue for this turn and how long it may wait there; None when no live
    worker holds its history's state or waiting for it would cost more than the prefill
    (counted as a fallback)."""
    if len(messages) < 2:
        return None
    raw = await redis.get(state_route_key(model, messages[:-1]))
    if raw is None:
        return None
    holder = StateHolder.model_validate_json(raw)
    worker = next((w for w in workers if w.holder == holder.holder and model in w.loaded_models()), None)
    rates = [w.prefill_tps for w in workers if w.prefill_tps and model in w.serves()]
    if worker is None or not rates:
        await count(redis, RouteCounter.FALLBACK)
        log.info("turn's state holder unavailable", extra={"holder": holder.holder, "alive": worker is not None})
        return None
    prefill_s = holder.tokens / (worker.prefill_tps or max(rates))
    queue = held_queue(model, worker.name)
    ahead = texts(await redis.lrange(queue_key(queue), 0, -1))
    budgets = [int(b or 0) or worker.default_max_tokens for b in await read_field(redis, [job_of(i) for i in ahead], "max_tokens")]
    work = worker.remaining + sum(budgets)
    wait_s = 0.0 if not work else work / worker.tps if worker.tps else float("inf")
    if wait_s >= prefill_s:
        await count(redis, RouteCounter.FALLBACK)
        log.info("turn not routed to its state's holder: waiting would cost more", extra={
            "holder": worker.name, "wait_s": round(wait_s, 2), "prefill_s": round(prefill_s, 2)})
        return None
    return Hold(queue, prefill_s)


async def count(redis: AsyncRedis, counter: RouteCounter) -> None:
    await redis.hincrby(METRICS_KEY, counter.value, 1)


# Move a waiting turn from its holder's queue to the front of the shared one (it was next in
# line when it was routed). KEYS: the holder's queue, the shared queue, the job hash; ARGV:
# the RQ id, the shared queue's name. 0 when a worker took it meanwhile.
_RELEASE_LUA = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'queue', ARGV[2])
return 1
"""


async def release_held(redis: AsyncRedis) -> None:
    """A housekeeping round: turns that waited in a holder's queue past their time, or whose
    holder is gone, go to their model's shared queue; a gone holder's empty queue is forgotten."""
    now = redis_seconds(await redis.time())
    for queue in await known_queues(redis):
        holder = queue_holder(queue)
        if holder is None:
            continue
        expires = await redis.zscore(WORKERS_KEY, holder)
        alive = expires is not None and float(expires) >= now
        ids = texts(await redis.lrange(queue_key(queue), 0, -1))
        if not ids and not alive:
            await redis.srem(Queue.redis_queues_keys, queue_key(queue))
            continue
        shared = queue_name(QueueKind.INTERACTIVE, queue_model(queue))
        for rq_id, until in zip(ids, await read_field(redis, [job_of(i) for i in ids], "hold_until")):
            if alive and until is not None and float(until) >= now:
                continue
            if await redis.eval(_RELEASE_LUA, 3, queue_key(queue), queue_key(shared), job_key(job_of(rq_id)), rq_id, shared):
                await count(redis, RouteCounter.RELEASED)
                log.info("turn moved from its state's holder to the shared queue", extra={
                    "job_id": job_of(rq_id), "holder": holder, "reason": "waited too long" if alive else "holder gone"})

