"""Append job events to their logs (and publish them) without slowing generation down."""

import logging
import math
import threading
import time
from collections.abc import Callable

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from hearth.contract import ANSWER_EVENTS, FINAL_EVENTS, Event, coalesce
from hearth.lifecycle import JobStatus, apply_events_args, start_args

log = logging.getLogger(__name__)

Commands = Callable[[Pipeline], None]  # queues more Redis commands on the writer's pipeline


class EventWriter:
    """Writes from a background thread, so the generation loop never waits for a Redis round
    trip. On a small machine the model keeps every core busy, and each write wakes this
    thread, Redis, the api and every reader, each taking a core from the model for a moment;
    so events are written together where a reader loses nothing by it:

    - a job's first token and its end: at once (time to first token, the next job's start);
    - a token after a token: up to `interval_s` after the previous write, with the others
      that came meanwhile, coalesced into one event;
    - anything else (`started`, `context_trimmed`): within `interval_s`, so with the first
      token when the prompt is evaluated quickly, on its own when it takes a while.

    A Redis outage delays events (retried until written), it never drops them."""

    def __init__(self, redis: Redis, ttl_s: int, interval_s: float = 0.0, retry_s: float = 0.5):
        self._redis, self._ttl, self._interval, self._retry = redis, ttl_s, interval_s, retry_s
        self._pending: list[tuple[str, Event]] = []
        self._commands: list[Commands] = []
        self._due: float | None = None  # monotonic time the pending events must be written by
        self._wake_at = math.inf  # when the writer thread next looks, unless notified
        self._next_at = 0.0  # the end of the interval since the last write
        self._after_token: str | None = None  # the job whose last emitted event was a token
        self._busy = False  # writing a batch
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="event-writer", daemon=True).start()

    def emit(self, job_id: str, event: Event, before: Commands | None = None) -> None:
        """Queue `event`; `before` adds commands that go out in the same pipeline, ahead of
        the events (a reader woken by the event then sees what they wrote)."""
        now = time.monotonic()
        with self._cond:
            is_token = isinstance(event, ANSWER_EVENTS)
            if is_token and self._after_token == job_id:
                due = self._next_at
            elif is_token or getattr(event, "type", None) in FINAL_EVENTS:
                due = now
            else:
                due = now + self._interval
            self._after_token = job_id if is_token else None
            self._pending.append((job_id, event))
            if before is not None:
                self._commands.append(before)
            self._due = due if self._due is None else min(self._due, due)
            if due < self._wake_at:  # else the writer looks in time on its own
                self._cond.notify_all()

    def start(self, job_id: str, worker: str, timed_out_message: str) -> JobStatus | None:
        """Take the job (hearth.lifecycle's START_LUA), at once: the status it is in now,
        `running` unless it was cancelled or past its start deadline (then it has ended)."""
        status = self._redis.eval(*start_args(job_id, worker, self._ttl, timed_out_message))
        return JobStatus(status.decode()) if status else None

    def apply_now(self, job_id: str, events: list[Event], push: tuple[str, str] | None = None) -> bool:
        """Apply `events` at once, after every event emitted before them; whether all were
        taken (a job that ended meanwhile takes none)."""
        self.flush()
        return int(self._redis.eval(*apply_events_args(job_id, events, self._ttl, push=push))) == len(events)

    def write(self, commands: Commands) -> None:
        """Run `commands` now, after every event emitted before them: what a job makes that is
        no event (an embedding job's vectors), in Redis before any later event says it is."""
        self.flush()
        pipe = self._redis.pipeline(transaction=False)
        commands(pipe)
        pipe.execute()

    def flush(self) -> None:
        """Block until every event emitted so far is in Redis."""
        with self._cond:
            if self._pending:
                self._due = time.monotonic()
                self._cond.notify_all()
            self._cond.wait_for(lambda: not self._pending and not self._busy)

    def _run(self) -> None:
        while True:
            with self._cond:
                while (now := time.monotonic()) < (self._due if self._due is not None else math.inf):
                    # Nothing due yet: look again when something is, or at the end of the
                    # interval (tokens that come meanwhile are due then: no wake-up per token),
                    # or, with nothing pending after it, only when told.
                    self._wake_at = self._due if self._due is not None else (self._next_at if now < self._next_at else math.inf)
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                batch, commands, self._pending, self._commands = self._pending, self._commands, [], []
                self._due, self._wake_at, self._busy = None, -math.inf, True  # looks again after writing
                self._next_at = now + self._interval
            self._write(batch, commands)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _write(self, batch: list[tuple[str, Event]], commands: list[Commands]) -> None:
        by_job: dict[str, list[tuple[None, Event]]] = {}
        for job_id, event in batch:
            by_job.setdefault(job_id, []).append((None, event))
        appends = [apply_events_args(job_id, [e for _, e in coalesce(events)], self._ttl)
                   for job_id, events in by_job.items()]
        while True:  # a pipeline is emptied by execute(), even a failed one: rebuild per try
            pipe = self._redis.pipeline(transaction=False)
            for add in commands:
                add(pipe)
            for args in appends:
                pipe.eval(*args)
            try:
                pipe.execute()
                return
            except RedisError as exc:
                log.warning("writing job events failed, retrying: %s", exc)
                time.sleep(self._retry)
