"""The housekeeping loop against a real Redis: its round runs again as soon as it is nudged, and
a job whose end must be filed nudges it from the lifecycle script itself."""

import asyncio
import random

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from api.jobs.housekeeping import BLOCK_S, housekeeping, nudge
from devstack import RedisServer, unused_db
from hearth.contract import NUDGE_KEY, DoneEvent, StartedEvent, Usage, job_key
from hearth.lifecycle import JobStatus, apply_events_args

# Far longer than the test waits: a second round within the deadline can only be the nudge's.
INTERVAL_S = 3600
DEADLINE_S = 30
STOPS = 200
STOP_DEADLINE_S = 5
DONE = DoneEvent(finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2))


def test_a_nudge_starts_the_next_round_at_once(redis_server: RedisServer) -> None:
    url = unused_db(redis_server)

    async def run() -> int:
        redis = AsyncRedis.from_url(url)
        rounds: list[float] = []
        held = asyncio.Event()

        async def round_() -> None:
            rounds.append(asyncio.get_running_loop().time())
            held.set()

        try:
            async with housekeeping(redis, [round_], INTERVAL_S):
                await asyncio.wait_for(held.wait(), DEADLINE_S)
                await nudge(redis)
                async with asyncio.timeout(DEADLINE_S):
                    while len(rounds) < 2:
                        await asyncio.sleep(0.01)
                return await redis.llen(NUDGE_KEY)
        finally:
            await redis.aclose()

    assert asyncio.run(run()) == 0  # taken by the round it started


def test_a_filed_job_nudges_housekeeping_once_however_many_end(redis_server: RedisServer) -> None:
    redis = Redis.from_url(unused_db(redis_server))
    for n in range(3):
        job_id = f"job-{n}"
        redis.hset(job_key(job_id), mapping={"status": JobStatus.QUEUED.value, "sink": "conversation"})
        assert redis.eval(*apply_events_args(job_id, [StartedEvent(worker="w"), DONE], 60)) == 2
    assert redis.llen(NUDGE_KEY) == 1
    plain = "job-plain"  # no sink: nothing to file, no nudge
    redis.hset(job_key(plain), mapping={"status": JobStatus.QUEUED.value})
    redis.delete(NUDGE_KEY)
    assert redis.eval(*apply_events_args(plain, [StartedEvent(worker="w"), DONE], 60)) == 2
    assert redis.llen(NUDGE_KEY) == 0
    redis.hset(job_key("job-last"), mapping={"status": JobStatus.QUEUED.value, "sink": "batch"})
    redis.eval(*apply_events_args("job-last", [StartedEvent(worker="w"), DONE], 60))
    assert redis.llen(NUDGE_KEY) == 1


def test_housekeeping_stops_whenever_it_is_cancelled(redis_server: RedisServer) -> None:
    """Regression: on Python 3.11 a cancellation that arrives as redis-py finishes sending a
    command was dropped (asyncio.wait_for), and the loop, blocked in Redis again, never ended.
    A short interval makes the loop send often; the api stops at random moments."""
    url = unused_db(redis_server)

    async def run() -> None:
        redis = AsyncRedis.from_url(url)
        loop = asyncio.get_running_loop()
        try:
            for n in range(STOPS):
                async with asyncio.timeout(STOP_DEADLINE_S):  # a loop that ran on would hang here
                    async with housekeeping(redis, [], 0.01):
                        await asyncio.sleep(random.uniform(0, 0.05))
                        asked = loop.time()
                assert loop.time() - asked <= BLOCK_S + 1, f"stop {n} took {loop.time() - asked:.1f} s"
        finally:
            await redis.aclose()

    asyncio.run(run())
