"""Append job events to their logs (and publish them) without slowing generation down."""

import logging
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from hearth.contract import TokenEvent, append_events_args, coalesce

log = logging.getLogger(__name__)

Commands = Callable[[Pipeline], None]  # queues more Redis commands on the writer's pipeline


class EventWriter:
    """Writes from a background thread, so the generation loop never waits for a Redis round
    trip. A token that follows a token waits up to `interval_s` after the previous write and
    goes out with the others that arrived meanwhile, coalesced into one event: the api, Redis
    and every reader then wake once per few tokens instead of once per token, which on a small
    machine is CPU taken from the model. Any other event (a job's start, its first token, its
    end) is written at once. A Redis outage delays events (retried until written), it never
    drops them."""

    def __init__(self, redis: Redis, ttl_s: int, interval_s: float = 0.0, retry_s: float = 0.5):
        self._redis, self._ttl, self._interval, self._retry = redis, ttl_s, interval_s, retry_s
        self._pending: list[tuple[str, BaseModel]] = []
        self._commands: list[Commands] = []
        self._urgent = False  # something pending must not wait for the interval
        self._after_token: str | None = None  # the job whose last emitted event was a token
        self._busy = False  # writing a batch
        self._idle = False  # waiting with nothing pending: only a notify wakes it
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="event-writer", daemon=True).start()

    def emit(self, job_id: str, event: BaseModel, before: Commands | None = None) -> None:
        """Queue `event`; `before` adds commands that go out in the same pipeline, ahead of
        the events (a reader woken by the event then sees what they wrote)."""
        with self._cond:
            is_token = isinstance(event, TokenEvent)
            urgent = not (is_token and self._after_token == job_id)
            self._after_token = job_id if is_token else None
            self._pending.append((job_id, event))
            if before is not None:
                self._commands.append(before)
            self._urgent |= urgent
            if urgent or self._idle:  # else the writer wakes on its own when the interval ends
                self._cond.notify_all()

    def flush(self) -> None:
        """Block until every event emitted so far is in Redis."""
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._pending and not self._busy)

    def _run(self) -> None:
        next_at = 0.0
        while True:
            with self._cond:
                # Sleep out the interval since the last write (an urgent event cuts it short),
                # then write what came meanwhile; only with nothing pending wait to be told.
                # In a stream of tokens that is one wake-up per write, not one per token or
                # two per write: each wake-up lands on a core the model is using.
                self._cond.wait_for(lambda: self._urgent, timeout=next_at - time.monotonic())
                if not self._pending:
                    self._idle = True
                    self._cond.wait_for(lambda: bool(self._pending))
                    self._idle = False
                    continue
                batch, commands, self._pending, self._commands = self._pending, self._commands, [], []
                self._urgent, self._busy = False, True
            self._write(batch, commands)
            next_at = time.monotonic() + self._interval
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _write(self, batch: list[tuple[str, BaseModel]], commands: list[Commands]) -> None:
        by_job: dict[str, list[tuple[None, BaseModel]]] = {}
        for job_id, event in batch:
            by_job.setdefault(job_id, []).append((None, event))
        appends = [append_events_args(job_id, [e for _, e in coalesce(events)], self._ttl)  # type: ignore[arg-type]
                   for job_id, events in by_job.items()]
        while True:  # a pipeline is emptied by execute(), even a failed one: rebuild per try
            pipe = self._redis.pipeline(transaction=False)
            for add in commands:
                add(pipe)
            for args in appends:
                pipe.eval(*args)  # type: ignore[arg-type]
            try:
                pipe.execute()
                return
            except RedisError as exc:
                log.warning("writing job events failed, retrying: %s", exc)
                time.sleep(self._retry)
