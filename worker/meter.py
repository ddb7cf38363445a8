"""What the worker tells the operator about each job: its log context and log lines, its
metrics and status record, and its live progress for the heartbeat.

`JobMeter` is the runner's event writer: it sees every event of a job as the runner emits it,
so it learns the times (started, first token, end), the tokens and the outcome without any
code in the generation path. A job's record goes out in the same Redis pipeline as its final
event, ahead of it: whoever sees the job end also sees it counted.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq.job import Job

from hearth import usage
from hearth.contract import ANSWER_EVENTS, DoneEvent, ErrorCode, ErrorEvent, Event, TokenEvent
from hearth.lifecycle import JobStatus
from hearth.logs import log_context
from hearth.metrics import FinishedJob, Outcome, outcome_of, record_job
from hearth.usage import UsageClock
from worker.events import Commands, EventWriter

log = logging.getLogger(__name__)

_ENDED_AT_START = {JobStatus.CANCELLED: ErrorCode.CANCELLED, JobStatus.TIMED_OUT: ErrorCode.TIMEOUT}


@dataclass
class _Track:
    """One running job, as far as the meter has seen it. Times are unix seconds."""

    job_id: str
    user: str
    queue: str
    model: str
    enqueued_at: float | None
    started_at: float | None = None
    first_token_at: float | None = None
    first_tokens: int = 0
    tokens: int = 0
    text: list[str] = field(default_factory=list)  # kept only when prompts may be logged

    def speed(self, tokens: int, now: float) -> float | None:
        """Tokens/s after the first text: generation alone, without the prompt's evaluation."""
        if self.first_token_at is None or tokens <= self.first_tokens or now <= self.first_token_at:
            return None
        return (tokens - self.first_tokens) / (now - self.first_token_at)

    def record(self, final: DoneEvent | ErrorEvent, worker: str, now: float) -> FinishedJob:
        outcome = outcome_of(final)
        if isinstance(final, DoneEvent):
            usage = final.usage
            prompt, cached, completion = usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, usage.completion_tokens
        else:
            prompt, cached, completion = 0, 0, self.tokens
        since = partial(_since, self.enqueued_at)
        return FinishedJob(
            id=self.job_id, user=self.user, queue=self.queue, model=self.model, outcome=outcome, worker=worker,
            enqueued_at=self.enqueued_at, started_at=self.started_at, finished_at=now,
            queue_wait_s=since(self.started_at), ttft_s=since(self.first_token_at),
            tokens_per_s=self.speed(completion, now) if outcome == Outcome.COMPLETED else None,
            prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion,
        )


def _since(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)


class JobMeter(EventWriter):
    def __init__(self, redis: Redis, ttl_s: int, interval_s: float, worker_name: str, log_prompts: bool, clock: UsageClock):
        super().__init__(redis, ttl_s, interval_s)
        self._worker, self._log_prompts, self._clock = worker_name, log_prompts, clock
        self._track: _Track | None = None
        self._tps = 0.0  # moving average of completed jobs' speed, for the api's wait estimates
        self._prefill_tps = 0.0  # and of their prompts' evaluation, for its routing by saved state

    @contextmanager
    def job(self, job: Job) -> Iterator[None]:
        """Around RQ's execution of `job`: every log line inside names the job and its user."""
        payload = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
        user = str(payload.get("user") or "")
        with log_context(job_id=str(payload.get("job_id", job.id)), user=user or None):
            enqueued = job.enqueued_at.timestamp() if job.enqueued_at else None
            self._track = _Track(str(payload.get("job_id", job.id)), user, job.origin, str(payload.get("model", "")), enqueued)
            messages = payload.get("messages") or []
            log.info("job started", extra={"queue": job.origin, "model": self._track.model, "messages": len(messages), "queue_wait_s": _round(_since(enqueued, time.time()))})
            if self._log_prompts:
                log.info("job prompt", extra={"messages": messages})
            try:
                yield
            finally:
                self._track = None

    def emit(self, job_id: str, event: Event, before: Commands | None = None) -> None:
        track = self._track
        if track is None or track.job_id != job_id:
            super().emit(job_id, event, before)
            return
        now = time.time()
        if isinstance(event, ANSWER_EVENTS):
            if track.first_token_at is None:
                track.first_token_at, track.first_tokens = now, event.tokens
            track.tokens += event.tokens
            if self._log_prompts and isinstance(event, TokenEvent):
                track.text.append(event.text)
        elif isinstance(event, (DoneEvent, ErrorEvent)):
            record = track.record(event, self._worker, now)
            if record.tokens_per_s:
                self._tps = _average(self._tps, record.tokens_per_s)
            prefill = record.prefill_per_s()
            if prefill:
                self._prefill_tps = _average(self._prefill_tps, prefill)
            self._log_end(record, track)
            super().emit(job_id, event, partial(_both, before, partial(self._record, record=record)))
            return
        super().emit(job_id, event, before)

    def start(self, job_id: str, worker: str, timed_out_message: str) -> JobStatus | None:
        status = super().start(job_id, worker, timed_out_message)
        track = self._track
        if track is not None and track.job_id == job_id:
            track.started_at = time.time()
            if status in _ENDED_AT_START:  # the start script ended it: count it here
                final = ErrorEvent(code=_ENDED_AT_START[status], message="")
                record = track.record(final, self._worker, track.started_at)
                self._log_end(record, track)
                pipe = self._redis.pipeline(transaction=False)
                self._record(pipe, record)
                pipe.execute()
        return status

    def _record(self, pipe: Pipeline, record: FinishedJob) -> None:
        """The job's metrics and its owner's usage, dated by Redis's clock (hearth.usage)."""
        record_job(pipe, record)
        try:
            moment = self._clock.at(self._redis.time())
        except RedisError:  # this write fails too and is retried (worker.events), asking Redis again
            moment = self._clock.at((int(time.time()), 0))
        usage.count(pipe, record.user, record.model, moment, usage.job_counts(record.prompt_tokens, record.cached_tokens, record.completion_tokens))

    def _log_end(self, record: FinishedJob, track: _Track) -> None:
        log.info("job %s", record.outcome.value, extra={
            "outcome": record.outcome.value, "queue_wait_s": _round(record.queue_wait_s), "ttft_s": _round(record.ttft_s),
            "tokens_per_s": _round(record.tokens_per_s), "prompt_tokens": record.prompt_tokens,
            "cached_tokens": record.cached_tokens, "completion_tokens": record.completion_tokens,
        })
        if self._log_prompts:
            log.info("job answer", extra={"text": "".join(track.text)})

    def live(self) -> dict[str, object]:
        """Speed and the running job's progress, for the heartbeat (and so for the api's wait
        estimates and `/v1/status`)."""
        track, now = self._track, time.time()
        return {
            "tps": round(self._tps, 2),
            "prefill_tps": round(self._prefill_tps, 2),
            "job_user": (track.user or None) if track else None,
            "job_started_at": track.started_at if track else None,
            "job_tokens": track.tokens if track else 0,
            "job_tokens_per_s": _round(track.speed(track.tokens, now)) if track else None,
        }


def _both(first: Commands | None, then: Commands, pipe: Pipeline) -> None:
    if first is not None:
        first(pipe)
    then(pipe)


def _average(mean: float, value: float) -> float:
    """A moving average that follows the recent jobs (0: none yet)."""
    return value if not mean else 0.7 * mean + 0.3 * value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
