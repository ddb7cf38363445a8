"""A worker's heartbeat: what it says about itself in `hearth:worker:{name}` (one field per
attribute, each JSON), renewed every `HEARTBEAT_INTERVAL_S` and expiring `HEARTBEAT_TTL_S`
after it stops. The worker writes it (worker.control); the api routes, estimates waits, checks
fits and shows `/v1/status` from it (api.models.workers). Fields an older worker did not send
take their defaults."""

import json
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict
from redis.typing import EncodableT, FieldT

from hearth.contract import EmbeddingModel, Message
from hearth.trimming import MIN_ANSWER, never_dropped


class WorkerInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = ""  # its key's (and index entry's) name, not a field of the hash
    model: str  # the model it used last: the window, vocabulary and overheads below are its
    n_ctx: int
    state: Literal["idle", "busy"]
    job: str | None = None  # the job it runs
    tps: float = 0.0  # recent generation speed, tokens/s (0 until the first job)
    prefill_tps: float = 0.0  # recent prompt evaluation speed, tokens/s (0 until one is measured)
    remaining: int = 0  # tokens the running job may still generate
    default_max_tokens: int
    prompt_overhead: int  # template tokens of a one-message chat
    message_overhead: int  # template tokens per further message, with a margin
    # The running job's progress (worker.meter), for /v1/status.
    job_user: str | None = None
    job_tokens: int = 0
    job_tokens_per_s: float | None = None
    job_started_at: float | None = None
    n_vocab: int = 0  # tokens in the model's vocabulary
    models: dict[str, int] = {}  # every model it serves -> its window
    host: str = ""
    holder: str = ""  # the id naming it the holder of saved states (worker.holder, hearth.state_routes)
    threads: int = 0
    gpu_layers: int = 0
    # The models it holds in memory now, most recently used first (none for a moment while it
    # swaps). None from a worker too old to say: it holds `model`.
    loaded: list[str] | None = None
    grammars_built: int = 0  # grammars built since it started
    # Saved model states (worker.state_cache): bytes in memory and in its STATE_DIR.
    state_memory_bytes: int = 0
    state_disk_bytes: int = 0
    embeds: dict[str, EmbeddingModel] = {}  # the models it embeds with

    def fields(self) -> dict[FieldT, EncodableT]:
        return {name: json.dumps(value) for name, value in self.model_dump(mode="json", exclude={"name"}).items()}

    @classmethod
    def of(cls, name: str, fields: Mapping[bytes, bytes]) -> "WorkerInfo":
        return cls.model_validate({**{k.decode(): json.loads(v) for k, v in fields.items()}, "name": name})

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

