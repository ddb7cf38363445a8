"""What the worker and the api record about finished jobs, for `/metrics` and `/v1/status`.

Counters and histogram buckets live in one Redis hash (`METRICS_KEY`) and are only ever
incremented (HINCRBY, HINCRBYFLOAT), so any number of processes add to them without
coordination; the api turns them into Prometheus metrics at scrape time. Every finished job
also leaves a `FinishedJob` in a capped sorted set (`RECENT_JOBS_KEY`), which feeds the status
page's recent jobs and its plots. The functions here only queue commands on a pipeline, sync
(the worker) or asyncio (the api), so the caller decides what else goes out with them.
"""

import math
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel

from hearth.contract import METRICS_KEY, RECENT_JOBS_KEY, USER_TOKENS_KEY, DoneEvent, ErrorEvent
from hearth.lifecycle import status_of

MIN_PREFILL_MEASURED = 16  # prompt tokens evaluated: fewer tell little of the prefill's speed
RECENT_KEEP = 1000  # job records kept: the recent-jobs list and the last hour's plots


class Outcome(StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"  # refused with 429 before it became a job (counted by the api)


def outcome_of(final: DoneEvent | ErrorEvent) -> Outcome:
    """How a job that ended with `final` counts: its status (hearth.lifecycle owns the mapping)."""
    status = status_of(final)
    assert status is not None
    return Outcome(status.value)


class Histogram(StrEnum):
    QUEUE_WAIT = "queue_wait_seconds"  # enqueued -> a worker started it
    TIME_TO_FIRST_TOKEN = "time_to_first_token_seconds"  # enqueued -> first text sent
    TOKENS_PER_SECOND = "generation_tokens_per_second"  # after the first token, completed jobs


# Upper bounds of the buckets; +Inf is implied. Waits and first tokens span a busy CPU's range
# (a 7B model queues minutes); speeds span a 7B on a laptop (~2/s) to SmolLM2 (~100/s).
BUCKETS: dict[Histogram, tuple[float, ...]] = {
    Histogram.QUEUE_WAIT: (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    Histogram.TIME_TO_FIRST_TOKEN: (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    Histogram.TOKENS_PER_SECOND: (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500),
}

PROMPT_EVALUATED = "prompt_tokens:evaluated"
PROMPT_CACHED = "prompt_tokens:cached"
TOKENS_PREDICTED = "tokens_predicted"


class ModelCounter(StrEnum):
    """Per model: what switching between models costs a worker (worker.pool)."""

    LOADS = "model_loads"
    UNLOADS = "model_unloads"
    LOAD_SECONDS = "model_load_seconds"


class StateCounter(StrEnum):
    """Saved model states (worker.state_cache): per job, whether its prompt's prefix was
    restored from memory or disk, or nothing reusable was found (a miss)."""

    RESTORES_MEMORY = "state_restores:memory"
    RESTORES_DISK = "state_restores:disk"
    MISSES = "state_misses"


class RouteCounter(StrEnum):
    """Turns whose history's saved state a live worker holds (api.jobs.state_routing): sent
    to its queue, or to the shared one (waiting would cost more than the prefill, or people
    wait already), and those moved from a worker's queue to the shared one (it took longer
    than the prefill would have, or its worker died)."""

    HOLDER = "state_routes:holder"
    FALLBACK = "state_routes:fallback"
    RELEASED = "state_routes:released"


def model_field(counter: ModelCounter, model: str) -> str:
    return f"{counter.value}:{model}"


def jobs_field(outcome: Outcome) -> str:
    return f"jobs:{outcome.value}"


def bound_label(bound: float) -> str:
    """A bucket bound as Prometheus writes `le` (`0.5`, `10.0`, `+Inf`)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def bucket_field(histogram: Histogram, bound: float) -> str:
    return f"{histogram.value}:le:{bound_label(bound)}"


def sum_field(histogram: Histogram) -> str:
    return f"{histogram.value}:sum"


def user_tokens_field(kind: str, user: str) -> str:
    return f"{kind}:{user}"


class Pipe(Protocol):
    """The commands used here, as both redis-py pipelines (sync and asyncio) queue them."""

    def hincrby(self, name: str, key: str, amount: int = 1) -> Any: ...
    def hincrbyfloat(self, name: str, key: str, amount: float = 1.0) -> Any: ...
    def zadd(self, name: str, mapping: Any) -> Any: ...
    def zremrangebyrank(self, name: str, min: int, max: int) -> Any: ...


def observe(pipe: Pipe, histogram: Histogram, value: float) -> None:
    """One observation: its bucket (not cumulative: the reader sums, and the count is the
    sum of all buckets) and the sum of the observed values."""
    bound = next((b for b in BUCKETS[histogram] if value <= b), math.inf)
    pipe.hincrby(METRICS_KEY, bucket_field(histogram, bound), 1)
    pipe.hincrbyfloat(METRICS_KEY, sum_field(histogram), value)


class FinishedJob(BaseModel):
    """One finished job, as the status page lists it. Times are unix seconds."""

    id: str
    user: str
    queue: str
    model: str = ""
    outcome: Outcome
    worker: str | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float
    queue_wait_s: float | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens: int = 0  # known for completed jobs (their usage)
    cached_tokens: int = 0
    completion_tokens: int = 0  # tokens sent, whatever the outcome

    def prefill_per_s(self) -> float | None:
        """Prompt tokens evaluated per second, from the job's start to its first text (a
        saved state's restore included); None when too few were evaluated to tell."""
        evaluated = self.prompt_tokens - self.cached_tokens
        if evaluated < MIN_PREFILL_MEASURED or self.started_at is None or self.enqueued_at is None or self.ttft_s is None:
            return None
        seconds = self.enqueued_at + self.ttft_s - self.started_at
        return evaluated / seconds if seconds > 0 else None


def record_job(pipe: Pipe, record: FinishedJob) -> None:
    """Queue on `pipe` everything a finished job adds: counters, histograms, per-user tokens,
    and its record among the recent jobs."""
    pipe.hincrby(METRICS_KEY, jobs_field(record.outcome), 1)
    for histogram, value in (
        (Histogram.QUEUE_WAIT, record.queue_wait_s),
        (Histogram.TIME_TO_FIRST_TOKEN, record.ttft_s),
        (Histogram.TOKENS_PER_SECOND, record.tokens_per_s),
    ):
        if value is not None:
            observe(pipe, histogram, value)
    if record.prompt_tokens:
        pipe.hincrby(METRICS_KEY, PROMPT_EVALUATED, record.prompt_tokens - record.cached_tokens)
        pipe.hincrby(METRICS_KEY, PROMPT_CACHED, record.cached_tokens)
        pipe.hincrby(USER_TOKENS_KEY, user_tokens_field("prompt", record.user), record.prompt_tokens)
    if record.completion_tokens:
        pipe.hincrby(METRICS_KEY, TOKENS_PREDICTED, record.completion_tokens)
        pipe.hincrby(USER_TOKENS_KEY, user_tokens_field("completion", record.user), record.completion_tokens)
    pipe.zadd(RECENT_JOBS_KEY, {record.model_dump_json(): record.finished_at})
    pipe.zremrangebyrank(RECENT_JOBS_KEY, 0, -RECENT_KEEP - 1)


def record_load(pipe: Pipe, model: str, seconds: float) -> None:
    pipe.hincrby(METRICS_KEY, model_field(ModelCounter.LOADS, model), 1)
    pipe.hincrbyfloat(METRICS_KEY, model_field(ModelCounter.LOAD_SECONDS, model), seconds)


def record_unload(pipe: Pipe, model: str) -> None:
    pipe.hincrby(METRICS_KEY, model_field(ModelCounter.UNLOADS, model), 1)


def record_state_reuse(pipe: Pipe, source: str) -> None:
    """One job's reuse of a saved state: `memory`, `disk`, `none` (a miss) or `live` (the
    state the model held: not counted)."""
    counter = {"memory": StateCounter.RESTORES_MEMORY, "disk": StateCounter.RESTORES_DISK, "none": StateCounter.MISSES}.get(source)
    if counter is not None:
        pipe.hincrby(METRICS_KEY, counter.value, 1)


def count_rejected(pipe: Pipe) -> None:
    pipe.hincrby(METRICS_KEY, jobs_field(Outcome.REJECTED), 1)
