"""Live job events: a stream the api serves hears its job's appends over pub/sub."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from hearth.contract import live_channel

log = logging.getLogger(__name__)

RESYNC = b""  # stands for messages that may have been missed: the reader re-reads the log


class Follower:
    """The messages published for one job, in order, since `follow` returned."""

    def __init__(self, pubsub: PubSub):
        self._pubsub = pubsub

    async def next(self, timeout: float) -> list[bytes]:
        """Every message that arrived so far, waiting up to `timeout` s for one ([] if none
        came). A follower that fell behind gets them all at once and catches up in one step.
        After a broken connection (redis-py reconnects and resubscribes on the next read) the
        last item is RESYNC."""
        messages: list[bytes] = []
        try:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
            while message is not None:
                messages.append(message["data"])
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
        except (RedisError, OSError) as exc:
            log.warning("live events lost Redis, re-reading the log: %s", exc)
            messages.append(RESYNC)
        return messages


@asynccontextmanager
async def follow(redis: AsyncRedis, job_id: str, confirm_s: float) -> AsyncIterator[Follower]:
    """Messages for `job_id` from now on, on a connection of this stream's own: one reader per
    connection is what redis-py's asyncio pub/sub supports through reconnects. Pub/sub drops
    what is published before the server has the subscription, so this returns once Redis
    confirms it (or after `confirm_s`; a follower that reads the log when idle still misses
    nothing)."""
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(live_channel(job_id))
        await pubsub.get_message(timeout=confirm_s)  # the confirmation
        yield Follower(pubsub)
    finally:
        await pubsub.aclose()
