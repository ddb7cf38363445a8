"""Background rounds that one api process at a time must run: the reaper, the batch runner,
filing answers, deleting the bytes of documents past their own end.

Every api process runs the loop; a lease in Redis (a key with a TTL, renewed each round by its
holder) lets one of them act, and another takes over within a few rounds when the holder stops.
Between rounds the holder blocks on `NUDGE_KEY` (BLPOP, on a connection of its own): whatever
makes work for it (a job to file, a batch created or cancelled) pushes there, so a batch starts
and ends, and a conversation's answer is filed, without waiting out the interval, and an idle
api does nothing in between.
"""

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from api.background import running, stop_if_cancelled
from hearth.contract import NUDGE_KEY

log = logging.getLogger(__name__)

LEASE_KEY = "hearth:housekeeping:lease"
# The longest single BLPOP: well below redis-py's 5 s socket timeout, and a bound on how long a
# read goes on after its task was cancelled (see `stop_if_cancelled`).
BLOCK_S = 1.0
SHORTEST_S = 0.01  # Redis reads a BLPOP timeout under 1 ms as 0, which blocks until a push

# Take or keep the lease: ours if free or already ours. KEYS: the lease; ARGV: token, TTL (ms).
_TAKE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# Give it up if ours. KEYS: the lease; ARGV: token.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""

Round = Callable[[], Awaitable[None]]


async def nudge(redis: AsyncRedis) -> None:
    """Starts the housekeeping round now (see the module's doc); one pending nudge is enough."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(NUDGE_KEY, 1)
        pipe.ltrim(NUDGE_KEY, 0, 0)
        await pipe.execute()


async def until_nudged(waiter: AsyncRedis, longest_s: float) -> None:
    """Returns when nudged, or after `longest_s`, blocked in Redis meanwhile. `waiter` is a
    connection of its own: a BLPOP holds its connection while it waits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + longest_s
    while (left := deadline - loop.time()) >= SHORTEST_S:
        if await waiter.blpop([NUDGE_KEY], timeout=min(left, BLOCK_S)):
            return
        stop_if_cancelled()


@asynccontextmanager
async def housekeeping(redis: AsyncRedis, rounds: Sequence[Round], interval_s: float) -> AsyncIterator[None]:
    """Runs each of `rounds` every `interval_s` while this process holds the lease, for as long
    as the block runs. A failing round is logged and tried again next time."""
    token = secrets.token_hex(8)
    ttl_ms = int(interval_s * 3000)  # three missed renewals and another process takes over
    waiter = redis.client()  # one connection of the pool, kept for the BLPOPs

    async def run() -> None:
        while True:
            stop_if_cancelled()
            try:
                if await redis.eval(_TAKE_LUA, 1, LEASE_KEY, token, ttl_ms):
                    for round_ in rounds:
                        await round_()
                    await until_nudged(waiter, interval_s)
                    continue
            except RedisError as exc:
                log.warning("housekeeping round failed: %s", exc)
            except Exception:
                log.exception("housekeeping round failed")
            await asyncio.sleep(interval_s)

    try:
        async with running("housekeeping", run):
            yield
    finally:
        await waiter.aclose()
        with suppress(RedisError):
            await redis.eval(_RELEASE_LUA, 1, LEASE_KEY, token)
