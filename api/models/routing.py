"""Which model answers a request, and whose queues it waits in: the one policy that the chat
router, the batch runner and `/v1/models` share.

A request's `model` is looked up, after `MODEL_ALIASES`, among the models that live workers
serve, then among those a worker served within `MODEL_MEMORY_S` (the registry that heartbeats
keep, `hearth.contract.MODELS_KEY`): a job for a model whose worker is restarting waits for it.
A name that is neither goes to `DEFAULT_MODEL` if the operator set one, else gets 404
`model_not_found`, before anything is queued. A request naming no model at all (the chat
page's) gets `DEFAULT_MODEL`, else a live model. Before any worker has ever been up, no name
can be checked: the request waits in the `*` queues for the first worker of any model.
"""

from dataclasses import dataclass

from redis.asyncio import Redis as AsyncRedis

from api.errors import HearthError
from api.settings import ApiSettings
from api.models.workers import live_workers
from hearth.contract import ANY_MODEL, EMBEDDING_MODELS_KEY, MODELS_KEY
from hearth.heartbeat import WorkerInfo

UNNAMED = "default"  # the job's model while no worker has ever said what it serves


@dataclass(frozen=True)
class Route:
    model: str  # the model that answers: the job's and the response's `model`
    queue_model: str  # whose queues the job waits in: `model`, or ANY_MODEL
    worker: WorkerInfo | None  # a live worker with the model loaded: its window and vocabulary check the request
    served: bool  # some live worker serves the model (so one can count a prompt before queueing)


class ModelNotFound(HearthError):
    def __init__(self, requested: str, available: list[str]):
        names = ", ".join(available) or "none"
        super().__init__(404, f"model: the model {requested!r} does not exist or is not served here. Available models: {names}.",
                         code="model_not_found", param="model")


@dataclass(frozen=True)
class ModelMap:
    """The models known at one moment, and how request names map onto them."""

    workers: list[WorkerInfo]
    recent: list[str]  # served within MODEL_MEMORY_S, most recently first (live ones included)
    aliases: dict[str, str]
    default: str
    embeddings: bool = False  # the models workers embed with (`/v1/embeddings`), rather than chat with

    def live(self) -> dict[str, list[WorkerInfo]]:
        """Each model a live worker serves -> those workers, by name."""
        by_model: dict[str, list[WorkerInfo]] = {}
        for w in self.workers:
            for model in (w.embeds if self.embeddings else w.serves()):
                by_model.setdefault(model, []).append(w)
        return dict(sorted(by_model.items()))

    def available(self) -> list[str]:
        return sorted(set(self.live()) | set(self.recent) | set(self.aliases))

    def route(self, requested: str) -> Route:
        live = self.live()
        name = self.aliases.get(requested, requested)
        if name in live or name in self.recent:
            return self._to(name, live)
        if self.default:
            return self._to(self.default, live)
        if not requested and (live or self.recent):
            return self._to(next(iter(live)) if live else self.recent[0], live)
        if not live and not self.recent:
            return Route(requested or UNNAMED, ANY_MODEL, None, False)
        raise ModelNotFound(requested, self.available())

    @staticmethod
    def _to(model: str, live: dict[str, list[WorkerInfo]]) -> Route:
        workers = live.get(model, [])
        loaded = next((w for w in workers if w.model == model), None)
        return Route(model, model, loaded, bool(workers))


# The registry's models seen within ARGV[1] seconds, by Redis's clock (the one heartbeats write).
_RECENT_LUA = """
local t = redis.call('TIME')
return redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', t[1] - tonumber(ARGV[1]))
"""


async def model_map(redis: AsyncRedis, settings: ApiSettings, embeddings: bool = False) -> ModelMap:
    """The models workers chat with, or with `embeddings` those they embed with. There,
    `DEFAULT_MODEL` answers unknown names only if it embeds."""
    workers = await live_workers(redis)
    registry = EMBEDDING_MODELS_KEY if embeddings else MODELS_KEY
    recent = [m.decode() for m in await redis.eval(_RECENT_LUA, 1, registry, settings.model_memory_s)]
    default = settings.default_model
    if embeddings and default not in recent and not any(default in w.embeds for w in workers):
        default = ""
    return ModelMap(workers, recent, settings.aliases, default, embeddings)
