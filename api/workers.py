"""Live workers, as their heartbeats describe them."""

import json
import time
from dataclasses import dataclass

from redis.asyncio import Redis as AsyncRedis

from hearth.contract import WORKERS_KEY, Message, worker_key


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
    prompt_overhead: int  # template tokens of a one-message chat
    message_overhead: int  # template tokens per further message, with a margin

    def surely_fits(self, messages: list[Message], max_tokens: int | None) -> bool:
        """Whether a chat fits this worker's window even if every byte were a token: such
        chats need no exact count before queueing (the worker counts anyway)."""
        bound = self.prompt_overhead + sum(len(m.content.encode()) + self.message_overhead for m in messages)
        return bound + (max_tokens or min(self.default_max_tokens, self.n_ctx // 2)) <= self.n_ctx


async def live_workers(redis: AsyncRedis) -> list[WorkerInfo]:
    """Read from the heartbeat index, not by scanning keys: a scan's cost grows with every job
    Redis keeps. Entries of dead workers are pruned on the way."""
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    pipe.zremrangebyscore(WORKERS_KEY, "-inf", now)
    pipe.zrange(WORKERS_KEY, 0, -1)
    names = [n.decode() for n in (await pipe.execute())[1]]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(worker_key(name))
    workers = []
    for name, raw in zip(names, await pipe.execute()):
        fields = {k.decode(): json.loads(v) for k, v in raw.items()}
        if fields:  # its hash expired after the index was read
            workers.append(WorkerInfo(
                name, fields["model"], fields["n_ctx"], fields["state"], fields["job"],
                fields["tps"], fields["remaining"], fields["default_max_tokens"],
                fields["prompt_overhead"], fields["message_overhead"],
            ))
    return sorted(workers, key=lambda w: w.name)
