"""A background loop of the api process, run as a task for as long as a block runs."""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any


@asynccontextmanager
async def running(name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Runs `loop()` (which never returns) until the block ends, then cancels it."""
    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
