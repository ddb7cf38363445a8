"""Live workers, as their heartbeats describe them."""

import json
from dataclasses import dataclass

from redis.asyncio import Redis as AsyncRedis

from hearth.contract import WORKER_KEY, WORKER_KEY_PATTERN


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    model: str
    n_ctx: int
    state: str
    job: str | None
    tps: float  # recent generation speed, tokens/s (0 until the first job)
    remaining: int  # tokens the running job may still generate
    default_max_tokens: int


async def live_workers(redis: AsyncRedis) -> list[WorkerInfo]:
    prefix = WORKER_KEY.format(name="")
    workers = []
    async for key in redis.scan_iter(match=WORKER_KEY_PATTERN, count=100):
        fields = {k.decode(): json.loads(v) for k, v in (await redis.hgetall(key)).items()}  # type: ignore[misc]
        if fields:  # expired between SCAN and HGETALL otherwise
            workers.append(WorkerInfo(
                key.decode().removeprefix(prefix), fields["model"], fields["n_ctx"], fields["state"], fields["job"],
                fields["tps"], fields["remaining"], fields["default_max_tokens"],
            ))
    return sorted(workers, key=lambda w: w.name)
