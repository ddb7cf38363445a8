"""Live workers, as their heartbeats describe them."""

import json
from dataclasses import dataclass

from redis.asyncio import Redis as AsyncRedis

from hearth.contract import WORKER_KEY, WORKER_KEY_PATTERN, Message


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
    prefix = WORKER_KEY.format(name="")
    workers = []
    async for key in redis.scan_iter(match=WORKER_KEY_PATTERN, count=100):
        fields = {k.decode(): json.loads(v) for k, v in (await redis.hgetall(key)).items()}  # type: ignore[misc]
        if fields:  # expired between SCAN and HGETALL otherwise
            workers.append(WorkerInfo(
                key.decode().removeprefix(prefix), fields["model"], fields["n_ctx"], fields["state"], fields["job"],
                fields["tps"], fields["remaining"], fields["default_max_tokens"],
                fields["prompt_overhead"], fields["message_overhead"],
            ))
    return sorted(workers, key=lambda w: w.name)
