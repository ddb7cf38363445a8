"""Live workers, as their heartbeats describe them."""

import json
from dataclasses import dataclass, field

from redis.asyncio import Redis as AsyncRedis

from hearth.contract import WORKERS_KEY, EmbeddingModel, Message, worker_key
from hearth.trimming import MIN_ANSWER, never_dropped


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
    # The running job's progress (worker.meter), for /v1/status.
    job_tokens: int
    job_tokens_per_s: float | None
    job_started_at: float | None
    n_vocab: int = 0  # tokens in the model's vocabulary; 0 from a worker too old to say
    # Published since workers route by model; an older worker serves only its loaded model.
    models: dict[str, int] = field(default_factory=dict)  # every model it serves -> its window
    host: str = ""
    threads: int = 0
    gpu_layers: int = 0
    # The models it holds in memory now, most recently used first (none for a moment while
    # it swaps); `model`, whose window, vocabulary and template overheads the fields above
    # describe, is the one it used last. None from a worker too old to say: it holds `model`.
    loaded: list[str] | None = None
    embeds: dict[str, EmbeddingModel] = field(default_factory=dict)  # the models it embeds with; none from an older worker

    def serves(self) -> dict[str, int]:
        return self.models or {self.model: self.n_ctx}

    def loaded_models(self) -> list[str]:
        return [self.model] if self.loaded is None else self.loaded

    def surely_fits(self, messages: list[Message], max_tokens: int | None) -> bool:
        """Whether a chat surely fits this worker's window, as it is or trimmed, even if every
        byte were a token: such chats need no exact count before queueing (the worker counts
        anyway). Trimmed, only the messages never left out must fit, beside the answer."""
        if self.prompt_bound(messages) + (max_tokens or min(self.default_max_tokens, self.n_ctx // 2)) <= self.n_ctx:
            return True
        kept = [messages[i] for i in never_dropped([m.role for m in messages])]
        return self.prompt_bound(kept) + (max_tokens or min(self.default_max_tokens, MIN_ANSWER)) <= self.n_ctx

    def prompt_bound(self, messages: list[Message]) -> int:
        """At least the prompt's tokens: a token is at least one byte."""
        return self.prompt_overhead + sum(len(m.content.encode(errors="replace")) + self.message_overhead for m in messages)


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
    workers = []
    for name, flat in await redis.eval(_LIVE_WORKERS_LUA, 1, WORKERS_KEY, worker_key("")):
        fields = {k.decode(): json.loads(v) for k, v in zip(flat[::2], flat[1::2])}
        if fields:  # its hash expired before its index entry
            workers.append(WorkerInfo(
                name.decode(), fields["model"], fields["n_ctx"], fields["state"], fields["job"],
                fields["tps"], fields["remaining"], fields["default_max_tokens"],
                fields["prompt_overhead"], fields["message_overhead"],
                fields["job_tokens"], fields["job_tokens_per_s"], fields["job_started_at"],
                fields.get("n_vocab", 0), fields.get("models", {}), fields.get("host", ""),
                fields.get("threads", 0), fields.get("gpu_layers", 0), fields.get("loaded"),
                {model: EmbeddingModel.model_validate(spec) for model, spec in fields.get("embeds", {}).items()},
            ))
    return sorted(workers, key=lambda w: w.name)
