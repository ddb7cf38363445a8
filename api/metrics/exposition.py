"""Hearth's Prometheus metrics, built at scrape time from Redis: what every process recorded
(`hearth.metrics`) plus the queues and workers as they are now. The api keeps no metric state
of its own, so any number of api processes answer the same scrape."""

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.asyncio import Redis as AsyncRedis

from api.jobs.queueing import known_queues, queue_key
from api.models.workers import live_workers
from hearth import metrics as m
from hearth.contract import ANY_MODEL, METRICS_KEY, USER_TOKENS_KEY, ErrorEvent
from hearth.heartbeat import WorkerInfo
from hearth.job_record import read_record

_MODEL_HELP = {
    m.ModelCounter.LOADS: "Times a worker loaded the model (at start, or for a job that asked for it).",
    m.ModelCounter.UNLOADS: "Times a worker unloaded the model to make room for another.",
    m.ModelCounter.LOAD_SECONDS: "Seconds workers spent loading the model.",
}
_HELP = {
    m.Histogram.QUEUE_WAIT: "Seconds from enqueue until a worker started the job.",
    m.Histogram.TIME_TO_FIRST_TOKEN: "Seconds from enqueue until the first text was sent (time in queue included).",
    m.Histogram.TOKENS_PER_SECOND: "Generation speed of completed jobs, tokens/s after the first token.",
}


@dataclass(frozen=True)
class Snapshot:
    recorded: dict[str, float]  # METRICS_KEY's fields
    user_tokens: dict[str, float]
    depths: dict[str, int]
    workers: list[WorkerInfo]


async def queue_depths(redis: AsyncRedis, models: Iterable[str] = (), embedding_models: Iterable[str] = ()) -> dict[str, int]:
    queues = await known_queues(redis, models, embedding_models)
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue_key(queue))
    return dict(zip(queues, map(int, await pipe.execute())))


async def snapshot(redis: AsyncRedis) -> Snapshot:
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(METRICS_KEY)
    pipe.hgetall(USER_TOKENS_KEY)
    recorded, user_tokens = await pipe.execute()

    def floats(raw: dict[bytes, bytes]) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in raw.items()}

    workers = await live_workers(redis)
    # The queues of every served model, and those waiting for any model's worker (always
    # there, so a dashboard has the series before any worker or job).
    depths = await queue_depths(redis, [ANY_MODEL, *(model for w in workers for model in w.serves())],
                                [model for w in workers for model in w.embeds])
    return Snapshot(floats(recorded), floats(user_tokens), depths, workers)


class SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot, per_user: bool):
        self._snap, self._per_user = snap, per_user

    def collect(self) -> Iterator[Metric]:
        s, get = self._snap, self._snap.recorded.get

        depth = GaugeMetricFamily("hearth_queue_depth", "Jobs waiting, per queue.", labels=["queue"])
        for queue, n in s.depths.items():
            depth.add_metric([queue], n)
        yield depth
        yield GaugeMetricFamily("hearth_requests_deferred", "Jobs waiting in all queues.", value=sum(s.depths.values()))
        busy = sum(w.state == "busy" for w in s.workers)
        yield GaugeMetricFamily("hearth_requests_processing", "Jobs being generated now.", value=busy)
        workers = GaugeMetricFamily("hearth_workers", "Live workers (heartbeat seen), by state.", labels=["state"])
        workers.add_metric(["idle"], len(s.workers) - busy)
        workers.add_metric(["busy"], busy)
        yield workers
        per_worker = GaugeMetricFamily("hearth_worker_busy", "1 while the worker generates, 0 while it waits.", labels=["worker"])
        for w in s.workers:
            per_worker.add_metric([w.name], int(w.state == "busy"))
        yield per_worker
        states = GaugeMetricFamily("hearth_state_bytes", "Saved model states a worker holds, in memory or on its disk.", labels=["worker", "tier"])
        for w in s.workers:
            states.add_metric([w.name, "memory"], w.state_memory_bytes)
            states.add_metric([w.name, "disk"], w.state_disk_bytes)
        yield states
        info = InfoMetricFamily("hearth_model", "Models that live workers have loaded, with their context size.")
        for model, n_ctx in sorted({(model, w.serves()[model]) for w in s.workers for model in w.loaded_models()}):
            info.add_metric([], {"model": model, "n_ctx": str(n_ctx)})
        yield info

        for counter in m.ModelCounter:
            family = CounterMetricFamily(f"hearth_{counter.value}", _MODEL_HELP[counter], labels=["model"])
            prefix = m.model_field(counter, "")
            for key, value in sorted(s.recorded.items()):
                if key.startswith(prefix):
                    family.add_metric([key.removeprefix(prefix)], value)
            yield family

        restores = CounterMetricFamily("hearth_state_restores", "Completed jobs whose prompt's start was restored from a saved model state, by where it was kept.", labels=["tier"])
        restores.add_metric(["memory"], get(m.StateCounter.RESTORES_MEMORY, 0))
        restores.add_metric(["disk"], get(m.StateCounter.RESTORES_DISK, 0))
        yield restores
        yield CounterMetricFamily("hearth_state_misses", "Completed jobs that found no saved state covering the start of their prompt (it was evaluated in full).",
                                  value=get(m.StateCounter.MISSES, 0))
        routes = CounterMetricFamily("hearth_state_routes", "Turns whose history's saved state a live worker held: sent to its queue (holder), to the shared queue (fallback), or moved from its queue to the shared one (released).", labels=["outcome"])
        for route in m.RouteCounter:
            routes.add_metric([route.value.partition(":")[2]], get(route, 0))
        yield routes
        jobs = CounterMetricFamily("hearth_jobs", "Jobs by how they ended; rejected = refused with 429.", labels=["outcome"])
        for outcome in m.Outcome:
            jobs.add_metric([outcome.value], get(m.jobs_field(outcome), 0))
        yield jobs
        prompt = CounterMetricFamily("hearth_prompt_tokens", "Prompt tokens of completed jobs: evaluated, or reused from the state cache.", labels=["kind"])
        prompt.add_metric(["evaluated"], get(m.PROMPT_EVALUATED, 0))
        prompt.add_metric(["cached"], get(m.PROMPT_CACHED, 0))
        yield prompt
        yield CounterMetricFamily("hearth_tokens_predicted", "Completion tokens generated and sent, whatever the outcome.", value=get(m.TOKENS_PREDICTED, 0))
        if self._per_user:
            users = CounterMetricFamily("hearth_user_tokens", "Tokens per user: prompt (of completed jobs) and completion.", labels=["user", "kind"])
            for key, value in sorted(s.user_tokens.items()):
                kind, _, user = key.partition(":")
                users.add_metric([user, kind], value)
            yield users

        for histogram in m.Histogram:
            cumulative, buckets = 0.0, []
            for bound in (*m.BUCKETS[histogram], float("inf")):
                cumulative += get(m.bucket_field(histogram, bound), 0)
                buckets.append((m.bound_label(bound), cumulative))
            yield HistogramMetricFamily(f"hearth_{histogram.value}", _HELP[histogram], buckets=buckets, sum_value=get(m.sum_field(histogram), 0))


async def exposition(redis: AsyncRedis, per_user: bool) -> bytes:
    """The metrics; `hearth_user_tokens{user}` only if `per_user` (who uses Hearth, and how
    much, is for admins)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(await snapshot(redis), per_user))
    return generate_latest(registry)


async def count_rejected(redis: AsyncRedis) -> None:
    pipe = redis.pipeline(transaction=False)
    m.count_rejected(pipe)
    await pipe.execute()


async def record_ended_by_api(redis: AsyncRedis, job_id: str, event: ErrorEvent) -> None:
    """Count a job that the api ended itself (taken out of the queue, or its worker lost);
    the caller's end was the one that took (hearth.lifecycle), so it is counted once."""
    job = await read_record(redis, job_id)
    record = m.FinishedJob(id=job_id, user=job.owner if job else "", queue=job.queue if job else "", model=job.model if job else "",
                           outcome=m.outcome_of(event), enqueued_at=job.created if job else None, finished_at=time.time())
    pipe = redis.pipeline(transaction=False)
    m.record_job(pipe, record)
    await pipe.execute()
