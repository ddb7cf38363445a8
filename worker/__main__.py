"""`python -m worker`: load the (first) model, then serve jobs until stopped."""

import logging
import time
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.job import Job

from hearth.contract import ANY_MODEL, RQ_SERIALIZER, held_queue, job_of, model_queues, queue_holder, queue_model
from hearth.heartbeat import WorkerInfo
from hearth.job_record import rq_queue, save_attempt
from hearth.logs import setup_logging
from hearth.redis_client import connect
from hearth.usage import UsageClock
from worker.chunk_vectors import ChunkSimilarity
from worker.control import CancelListener, Heartbeat
from worker.documents_prompt import DocumentReader
from worker.embedder import Embedder, count_tokens, embedding_catalog
from worker.engine import Engine
from worker.fit_check import FitChecker
from worker.holder import Holder
from worker.meter import JobMeter
from worker.models import catalog
from worker.pool import ModelPool
from worker.prompter import Prompter
from worker.route_keys import RouteKeys
from worker.runner import JobRunner
from worker.settings import WorkerSettings
from worker.state_disk import StateDisk
from worker.tasks import current_runner
from worker.turns import Turns

log = logging.getLogger("worker")


# SimpleWorker runs each job in this process: RQ's default Worker forks a child per job, which
# would either reload the model every job or fork llama.cpp with its threads alive, and would
# throw away the KV state that lets a returning conversation skip its history.
class HearthWorker(SimpleWorker):
    def __init__(self, *args: Any, runner: JobRunner, meter: JobMeter, liveness: Heartbeat, turns: Turns, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Not `heartbeat`: that is RQ's own method, which RQ calls.
        self.runner, self.meter, self.liveness, self.turns = runner, meter, liveness, turns

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> tuple[Job, Queue] | None:
        """RQ pops from the first of its queues that has a job (BLPOP's key order): set that
        order before each job, by which models are in memory and whose jobs wait."""
        if len(self.runner.pool.files) > 1:
            by_name = {q.name: q for q in self.queues}
            pipe = self.connection.pipeline(transaction=False)
            for queue in self.queues:
                pipe.llen(queue.key)
            waiting = {q.name for q, n in zip(self.queues, pipe.execute()) if n}
            held = [q for q in self.queues if queue_holder(q.name)]
            self._ordered_queues = held + [by_name[name] for name in self.turns.order(self.runner.pool.loaded, waiting)]
        result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        if result is not None:
            if queue_holder(result[1].name):
                log.info("took a turn routed here by its saved state", extra={"queue": result[1].name, "job_id": job_of(result[0].id)})
            model = queue_model(result[1].name)
            self.turns.taken(self.runner.pool.current.model_id if model == ANY_MODEL else model)
        return result

    def execute_job(self, job: Job, queue: Queue) -> None:
        token = current_runner.set(self.runner)
        try:
            with self.meter.job(job):  # log context (RQ's own lines too), times and outcome
                super().execute_job(job, queue)
        finally:
            current_runner.reset(token)
            self.liveness.poke()  # idle again, and its speed updated

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]  # RQ's Worker method is untyped
        self.runner.shutdown()


RESTART_DELAY_S = 1.0


def document_embedding_model(settings: WorkerSettings, pool: ModelPool) -> str:
    """The model this worker embeds questions about long documents with ("": BM25 alone),
    after saying what is wrong with DOCUMENT_EMBEDDING_MODEL, if anything."""
    model = settings.document_embedding_model
    if not model:
        return ""
    if model not in pool.embeddings:
        log.warning("DOCUMENT_EMBEDDING_MODEL names no model this worker embeds with: it ranks documents' chunks by BM25 alone",
                    extra={"model": model, "embeds": list(pool.embeddings)})
        return ""
    budget, cost = settings.model_memory_budget_mb * 2**20, pool.embeddings[model][0].cost_bytes
    if model not in pool.files and (not budget or budget < cost + max(f.cost_bytes for f in pool.files.values())):
        log.warning("MODEL_MEMORY_BUDGET_MB cannot hold DOCUMENT_EMBEDDING_MODEL beside a chat model: questions about long "
                    "documents will swap models", extra={"model": model, "budget_mb": settings.model_memory_budget_mb})
    return model


def wait_for_redis(redis: Redis, timeout_s: float = 60) -> None:
    """`make run` starts Redis beside us: give it a moment rather than crash at start."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            redis.ping()
            return
        except RedisError as exc:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for Redis at %s: %s", redis.connection_pool.connection_kwargs.get("host"), exc)
            time.sleep(0.5)


def main() -> None:
    settings = WorkerSettings()
    setup_logging("worker", settings)
    redis = connect(settings.redis_url)
    # RQ's own client: RQ raises its pool's socket timeout above its long BLPOP, which must
    # not happen to connections already made with redis-py's 5 s default (they would time
    # out every idle dequeue), nor to our threads' short commands.
    rq_redis = connect(settings.redis_url)
    files = catalog(settings)
    models = list(files)
    # The holder of its saved states: the same after a restart when they are on disk.
    holder = Holder(Path(settings.state_dir)) if settings.state_disk_mb else None  # locked while this process runs
    routes = RouteKeys(redis, holder.id if holder else settings.worker_name)
    disk = StateDisk(Path(settings.state_dir), settings.state_disk_mb * 2**20, routes) if settings.state_disk_mb else None
    embeddings = embedding_catalog(settings.embedding_models, settings.embedding_max_tokens, files)
    embedding_models = list(embeddings)
    index = settings.document_index()  # long documents' chunks, for every model's prompts and the embedding jobs
    pool = ModelPool(files, settings.model_memory_budget_mb * 2**20, lambda file: Engine(settings, file, disk, routes, index), redis,
                     embeddings, lambda file, spec: Embedder.load(file, spec, settings.n_threads, settings.n_gpu_layers))
    log.info("serving %d model(s)", len(models), extra={"models": {m.id: m.n_ctx for m in files.values()}})
    FitChecker(redis, {m.id: Prompter(m.vocab, m.n_ctx, settings.default_max_tokens, index, settings.tool_max_parallel_calls)
                       for m in files.values()},
               {model: partial(count_tokens, file.vocab._model) for model, (file, _) in embeddings.items()})
    meter = JobMeter(redis, settings.job_ttl_s, settings.event_interval_ms / 1000, settings.worker_name, settings.log_prompts,
                     UsageClock(settings.usage_timezone, settings.usage_clock_offset_s))
    runner = JobRunner(settings.worker_name, routes.holder, pool, meter, CancelListener(redis, models),
                       lambda queue, payload: save_attempt(rq_redis, queue, payload, settings.job_ttl_s), disk, DocumentReader(redis),
                       index, ChunkSimilarity(redis, document_embedding_model(settings, pool), index.chunking, pool.embedder,
                                                      settings.task_prefixes))
    heartbeat = Heartbeat(redis, settings.worker_name, models, embedding_models,
                          lambda: WorkerInfo.model_validate({**runner.info(), **meter.live()}), settings.heartbeat_interval_s, settings.heartbeat_ttl_s)
    wait_for_redis(redis)
    heartbeat.start()
    worker = HearthWorker(
        # Turns routed to this worker by their saved state first (they wait for it alone), then
        # the models' shared queues, interactive first.
        [rq_queue(name, rq_redis) for name in [*(held_queue(m, settings.worker_name) for m in models), *model_queues(models, embedding_models)]],
        connection=rq_redis,
        serializer=RQ_SERIALIZER,
        name=settings.worker_name,
        runner=runner,
        meter=meter,
        liveness=heartbeat,
        turns=Turns(models, settings.swap_after_jobs, embedding_models),
    )
    try:
        # RQ's loop rides out Redis outages while it waits for a job, but quits on one that
        # hits its bookkeeping around a job: start it again until we are asked to stop.
        while True:
            try:
                worker.work(with_scheduler=False, logging_level=logging.getLevelName(logging.getLogger().level))
            except RedisError as exc:
                log.warning("worker loop lost Redis: %s", exc)
            if runner.stopping:
                break
            log.warning("worker loop ended unexpectedly; restarting it in %.0f s", RESTART_DELAY_S)
            time.sleep(RESTART_DELAY_S)
            # The loop that ended left RQ's record of this worker alive (Redis keeps it across
            # a restart): without its death RQ refuses to start a worker of the same name.
            with suppress(RedisError):
                worker.register_death()  # type: ignore[no-untyped-call]  # RQ's Worker method is untyped
    finally:
        heartbeat.stop()
        if disk is not None:
            disk.close()  # the last job's state, for this worker's successor
        routes.close()


if __name__ == "__main__":
    main()
