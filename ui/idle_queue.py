"""Gradio's event queue, asleep while it has nothing to do.

Gradio 6.31's queue (`gradio.queueing.Queue`) looks for work on a timer, work or not: its
processing loop every 1 ms, its progress loop every 10 ms. A ui that nobody uses spent about
4 % of a core on that. `IdleQueue` runs the same loops, but where Gradio would sleep a few
milliseconds to look again, they wait for what they look at to change: an event pushed, one
finished, a job started, the queue closed. Everything else is Gradio's own; the loops below are
Gradio 6.31's, with only their sleeps replaced (check them again when Gradio moves).
"""

import asyncio
import time
from contextlib import suppress
from typing import Any

from gradio.queueing import Event, Queue
from gradio.utils import run_coro_in_background, set_task_name


class IdleQueue(Queue):
    @classmethod
    def replacing(cls, queue: Queue) -> "IdleQueue":
        """One with the settings of `queue` (what `Blocks.queue()` made): install it as the
        Blocks' `_queue` before launch."""
        return cls(live_updates=queue.live_updates, concurrency_count=queue.max_thread_count,
                   update_intervals=queue.update_intervals, max_size=queue.max_size, blocks=queue.blocks,
                   default_concurrency_limit=queue.default_concurrency_limit)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._changed = asyncio.Event()  # an event pushed or finished, or the queue closed
        self._job_started = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the server's, once the loops run

    def _wake(self) -> None:
        self._changed.set()
        self._job_started.set()

    async def push(self, *args: Any, **kwargs: Any) -> Any:
        pushed = await super().push(*args, **kwargs)
        self._changed.set()
        return pushed

    async def process_events(self, events: list[Event], *args: Any, **kwargs: Any) -> None:
        try:
            await super().process_events(events, *args, **kwargs)
        finally:
            self._changed.set()  # a slot of its concurrency limit is free again

    def close(self) -> None:
        """Called from another thread (`Blocks.close`): the loops are woken in theirs, to end."""
        super().close()
        if self._loop is not None:
            with suppress(RuntimeError):  # that loop has already ended: nothing waits
                self._loop.call_soon_threadsafe(self._wake)

    async def _until_changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    async def start_processing(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            while not self.stopped:
                if len(self) == 0 or None not in self.active_jobs:
                    await self._until_changed()
                    continue
                async with self.delete_lock:  # Gradio's: not while events are being removed
                    event_batch = self.get_events()
                if not event_batch:  # every waiting event's concurrency limit is reached
                    await self._until_changed()
                    continue
                events, batch, concurrency_id = event_batch
                self.active_jobs[self.active_jobs.index(None)] = events
                event_queue = self.event_queue_per_concurrency_id[concurrency_id]
                event_queue.current_concurrency += 1
                start_time = time.time()
                fn = events[0].fn
                event_queue.start_times_per_fn[fn].add(start_time)
                for event in events:
                    if (a := self.event_analytics.get(event._id)) is not None:
                        a["status"] = "processing"
                task = run_coro_in_background(self.process_events, events, batch, start_time, fn)
                set_task_name(task, events[0].session_hash, fn._id, events[0]._id, batch)
                self._asyncio_tasks.add(task)
                task.add_done_callback(self._asyncio_tasks.discard)
                self._job_started.set()
                if self.live_updates:
                    self.broadcast_estimations(concurrency_id)
        finally:
            self.stopped = True
            self._cancel_asyncio_tasks()

    async def start_progress_updates(self) -> None:
        while not self.stopped:
            events = [evt for job in self.active_jobs if job is not None for evt in job]
            if not events:  # nothing runs, nothing reports progress
                self._job_started.clear()
                await self._job_started.wait()
                continue
            for event in events:
                if event.progress_pending and event.progress:
                    event.progress_pending = False
                    self.send_message(event, event.progress)
            await asyncio.sleep(self.progress_update_sleep_when_free)
