"""Append job events to their Redis Streams without slowing generation down."""

import logging
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from hearth.contract import TokenEvent, encode_event, events_key

log = logging.getLogger(__name__)

Commands = Callable[[Pipeline], None]  # queues more Redis commands on the writer's pipeline


def coalesce(events: list[BaseModel]) -> list[BaseModel]:
    """Consecutive token events merged into one: nothing dropped, fewer entries."""
    out: list[BaseModel] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, TokenEvent) and isinstance(last, TokenEvent):
            out[-1] = TokenEvent(text=last.text + event.text, tokens=last.tokens + event.tokens)
        else:
            out.append(event)
    return out


class EventWriter:
    """Writes from a background thread, so the generation loop never waits for a Redis round
    trip; tokens that pile up while a write is in flight go out coalesced in the next one.
    A Redis outage delays events (retried until written), it never drops them."""

    def __init__(self, redis: Redis, ttl_s: int, retry_s: float = 0.5):
        self._redis, self._ttl, self._retry = redis, ttl_s, retry_s
        self._pending: list[tuple[str, BaseModel]] = []
        self._commands: list[Commands] = []
        self._busy = False
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="event-writer", daemon=True).start()

    def emit(self, job_id: str, event: BaseModel, before: Commands | None = None) -> None:
        """Queue `event`; `before` adds commands that go out in the same pipeline, ahead of
        the events (a reader woken by the event then sees what they wrote)."""
        with self._cond:
            self._pending.append((job_id, event))
            if before is not None:
                self._commands.append(before)
            self._cond.notify_all()

    def flush(self) -> None:
        """Block until every event emitted so far is in Redis."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and not self._busy)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                batch, commands, self._pending, self._commands, self._busy = self._pending, self._commands, [], [], True
            self._write(batch, commands)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _write(self, batch: list[tuple[str, BaseModel]], commands: list[Commands]) -> None:
        by_job: dict[str, list[BaseModel]] = {}
        for job_id, event in batch:
            by_job.setdefault(job_id, []).append(event)
        entries = {job_id: [encode_event(e) for e in coalesce(events)] for job_id, events in by_job.items()}
        while True:  # a pipeline is emptied by execute(), even a failed one: rebuild per try
            pipe = self._redis.pipeline(transaction=False)
            for add in commands:
                add(pipe)
            for job_id, fields in entries.items():
                for entry in fields:
                    pipe.xadd(events_key(job_id), entry)  # type: ignore[arg-type]
                pipe.expire(events_key(job_id), self._ttl)
            try:
                pipe.execute()
                return
            except RedisError as exc:
                log.warning("writing job events failed, retrying: %s", exc)
                time.sleep(self._retry)
