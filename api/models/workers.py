"""Live workers, as their heartbeats (hearth.heartbeat) describe them."""

from redis.asyncio import Redis as AsyncRedis

from hearth.contract import WORKERS_KEY, worker_key
from hearth.heartbeat import WorkerInfo


# Live workers' names and heartbeat hashes (flat field/value lists), read from the heartbeat
# index rather than by scanning keys, whose cost grows with every job Redis keeps; entries of
# dead workers are pruned on the way, by Redis's clock, which the expiry times are in. One
# round trip: every chat request asks.
# KEYS: the index; ARGV: the hash key prefix.
_LIVE_WORKERS_LUA = """
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t[1] + t[2] / 1e6)
local out = {}
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = {name, redis.call('HGETALL', ARGV[1] .. name)}
end
return out
"""


async def live_workers(redis: AsyncRedis) -> list[WorkerInfo]:
    workers = [WorkerInfo.of(name.decode(), dict(zip(flat[::2], flat[1::2])))
               for name, flat in await redis.eval(_LIVE_WORKERS_LUA, 1, WORKERS_KEY, worker_key(""))
               if flat]  # else its hash expired before its index entry
    return sorted(workers, key=lambda w: w.name)
