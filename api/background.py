"""A background loop of the api process, run as a task for as long as a block runs."""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any


def stop_if_cancelled() -> None:
    """Raises `CancelledError` if the running task was asked to stop; a background loop calls it
    once per pass. On Python 3.11, `asyncio.wait_for` drops a cancellation that arrives just as
    the awaited call completes (CPython gh-86296, fixed in 3.12), and redis-py 8 sends every
    command through it: the command returns as if nothing happened and the loop would run on,
    so `running` would wait for it forever. The request stays counted by `Task.cancelling()`."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@asynccontextmanager
async def running(name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Runs `loop()` (which never returns, and calls `stop_if_cancelled` between its passes)
    until the block ends, then cancels it."""
    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
