"""The models a worker holds in memory: loaded when a job asks for one, the least recently
used unloaded when the next would not fit the memory budget. A chat model embeds with a second
context on its own weights; an embedding-only model (`EMBEDDING_MODELS`) is held like a chat
model, in the same budget (worker.embedder)."""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

from redis import Redis
from redis.exceptions import RedisError

from hearth.metrics import record_load, record_unload
from worker.embedder import Embedder, EmbeddingSpec
from worker.engine import Engine
from worker.models import ModelFile

log = logging.getLogger(__name__)


class ModelPool:
    """Used by the worker's one job thread; the heartbeat's thread reads `loaded` and
    `current` meanwhile (never waiting for a load: a heartbeat late by a load's seconds would
    mark the worker dead)."""

    def __init__(self, files: dict[str, ModelFile], budget_bytes: int, load: Callable[[ModelFile], Engine], redis: Redis,
                 embeddings: dict[str, tuple[ModelFile, EmbeddingSpec]], load_embedder: Callable[[ModelFile, EmbeddingSpec], Embedder]):
        self.files, self._budget, self._load, self._redis = files, budget_bytes, load, redis
        self.embeddings, self._load_embedder = embeddings, load_embedder  # the models it embeds with, by id
        self._loaded: OrderedDict[str, Engine | Embedder] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self.current = self.get(next(iter(files)))  # the first model is loaded at start: ready at once, as with one

    @property
    def loaded(self) -> list[str]:
        """Models in memory, most recently used first."""
        with self._lock:
            return list(reversed(self._loaded))

    @property
    def state_memory_bytes(self) -> int:
        """Memory the loaded models' saved states take."""
        with self._lock:
            return sum(engine.cache.size for engine in self._loaded.values() if isinstance(engine, Engine))

    def get(self, model: str, loading: Callable[[], None] = lambda: None) -> Engine:
        """`model`'s engine, loaded first if it is not (calling `loading` before); it becomes
        the current one."""
        engine = self._hold(model, self.files[model], self._load, loading)
        assert isinstance(engine, Engine)  # chat models' ids hold engines
        with self._lock:
            self.current = engine
        return engine

    def embedder(self, model: str, loading: Callable[[], None] = lambda: None) -> Embedder:
        """What embeds with `model`: a chat model's own embedding context, or an embedding-only
        model, loaded first if it is not (calling `loading` before)."""
        file, spec = self.embeddings[model]
        if model in self.files:
            return self.get(model, loading).embedder(spec)
        embedder = self._hold(model, file, lambda f: self._load_embedder(f, spec), loading)
        assert isinstance(embedder, Embedder)  # embedding-only models' ids hold embedders
        return embedder

    def _hold(self, model: str, file: ModelFile, load: Callable[[ModelFile], Engine | Embedder],
              loading: Callable[[], None]) -> Engine | Embedder:
        with self._lock:
            held = self._loaded.get(model)
            if held is not None:
                self._loaded.move_to_end(model)
                return held
        loading()
        self._make_room(file)
        started = time.monotonic()
        held = load(file)
        seconds = time.monotonic() - started
        with self._lock:
            self._loaded[model] = held
        log.info("model loaded", extra={"model": model, "load_s": round(seconds, 3), "cost_mb": file.cost_bytes // 2**20})
        self._count(partial(record_load, model=model, seconds=seconds))
        return held

    def _make_room(self, file: ModelFile) -> None:
        """Unload the least recently used until `file` fits beside the rest. A budget of 0 holds
        one model; one model over the budget is loaded alone (and warned about)."""
        def used() -> int:
            return sum((self.files.get(m) or self.embeddings[m][0]).cost_bytes for m in self._loaded)

        while self._loaded and (not self._budget or used() + file.cost_bytes > self._budget):
            with self._lock:
                model, engine = self._loaded.popitem(last=False)
            engine.close()
            log.info("model unloaded", extra={"model": model, "for_model": file.id})
            self._count(partial(record_unload, model=model))
        if self._budget and file.cost_bytes > self._budget:
            log.warning("model is over the memory budget; loading it alone", extra={
                "model": file.id, "cost_mb": file.cost_bytes // 2**20, "budget_mb": self._budget // 2**20})

    def _count(self, add: Callable[..., None]) -> None:
        # Counting is for the operator's dashboards: a Redis outage must not fail the job.
        try:
            pipe = self._redis.pipeline(transaction=False)
            add(pipe)
            pipe.execute()
        except RedisError as exc:
            log.warning("could not count a model load or unload: %s", exc)
