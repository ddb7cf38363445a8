"""What `GET /v1/status` shows: the queue with positions, the running jobs with their live
speed, recent jobs, and the last hour as time series. Admins see every job; a user sees their
own, plus what names nobody: the queue lengths and the running job's speed.

Queue depth is sampled by every api process every `SAMPLE_S` seconds into one slot per
period, so several api processes agree instead of adding up, and the plot keeps going when no
worker is up (which is when the queue grows). Per-job series come from the job records the
worker writes (`hearth.metrics.FinishedJob`).
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from api.accounts.users import User
from api.background import running, stop_if_cancelled
from api.jobs.queueing import known_queues, queue_key
from api.metrics.exposition import queue_depths
from api.models.workers import live_workers
from hearth.contract import QUEUE_DEPTH_KEY, RECENT_JOBS_KEY, job_of
from hearth.job_record import read_field, read_fields
from hearth.metrics import FinishedJob

log = logging.getLogger(__name__)

SAMPLE_S = 5  # queue depth sampling period
HISTORY_S = 3600  # span of the time series
RECENT_SHOWN = 50  # recent jobs listed


async def sample_queue_depth(redis: AsyncRedis) -> None:
    now = time.time()
    slot = int(now // SAMPLE_S * SAMPLE_S)
    sample = json.dumps({"t": slot, **await queue_depths(redis)})
    pipe = redis.pipeline(transaction=True)
    pipe.zremrangebyscore(QUEUE_DEPTH_KEY, slot, slot)  # another api's sample of this slot
    pipe.zadd(QUEUE_DEPTH_KEY, {sample: slot})
    pipe.zremrangebyscore(QUEUE_DEPTH_KEY, "-inf", f"({now - HISTORY_S}")
    await pipe.execute()


@asynccontextmanager
async def queue_sampler(redis: AsyncRedis) -> AsyncIterator[None]:
    """Samples queue depth in the background for as long as the block runs."""

    async def run() -> None:
        failing = False
        while True:
            try:
                await sample_queue_depth(redis)
                failing = False
            except RedisError as exc:
                if not failing:  # once per outage, not every period
                    log.warning("queue depth sampling failed: %s", exc)
                failing = True
            stop_if_cancelled()
            await asyncio.sleep(SAMPLE_S)

    async with running("queue-depth-sampler", run):
        yield


async def build_status(redis: AsyncRedis, viewer: User) -> dict[str, object]:
    now = time.time()

    def sees(owner: str | None) -> bool:
        return viewer.is_admin or owner == viewer.name

    workers = await live_workers(redis)
    queues = await known_queues(redis, [model for w in workers for model in w.serves()], [model for w in workers for model in w.embeds])
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        pipe.lrange(queue_key(queue), 0, -1)
    pipe.zrevrange(RECENT_JOBS_KEY, 0, -1)
    pipe.zrangebyscore(QUEUE_DEPTH_KEY, now - HISTORY_S, "+inf")
    *waiting, recent_raw, depth_raw = await pipe.execute()

    waiting_ids = [job_of(job_id.decode()) for ids in waiting for job_id in ids]
    metas = iter(await read_fields(redis, waiting_ids, "owner", "created"))
    queued: list[dict[str, object]] = []
    for queue, ids in zip(queues, waiting):
        for position, raw_id in enumerate(ids, 1):
            owner, created = next(metas)
            if sees(owner):
                queued.append({"id": job_of(raw_id.decode()), "user": owner, "queue": queue, "position": position,
                               "waiting_s": round(now - float(created), 1) if created else None})

    running: list[dict[str, object]] = []
    for w in workers:
        if w.state != "busy" or not w.job:
            continue
        [owner] = await read_field(redis, [w.job], "owner")
        started = w.job_started_at
        entry: dict[str, Any] = {"id": None, "user": None, "worker": w.name, "model": w.model, "tokens": w.job_tokens,
                                 "tokens_per_s": w.job_tokens_per_s, "started_at": started,
                                 "elapsed_s": round(now - started, 1) if started else None}
        if sees(owner):
            entry.update(id=w.job, user=owner)
        running.append(entry)

    records = [r for r in (FinishedJob.model_validate_json(raw) for raw in recent_raw) if sees(r.user)]
    hour = [r for r in reversed(records) if r.finished_at >= now - HISTORY_S]
    return {
        "object": "hearth.status",
        "now": round(now, 3),
        "user": viewer.name,
        "admin": viewer.is_admin,
        "queues": {queue: len(ids) for queue, ids in zip(queues, waiting)},
        "queued": queued,
        "running": running,
        "workers": [{"name": w.name, "host": w.host, "model": w.model, "models": sorted(w.serves()), "loaded": w.loaded_models(), "n_ctx": w.n_ctx,
                     "threads": w.threads, "gpu_layers": w.gpu_layers, "state": w.state,
                     "state_memory_bytes": w.state_memory_bytes, "state_disk_bytes": w.state_disk_bytes}
                    for w in workers],
        "recent": [r.model_dump(mode="json") for r in records[:RECENT_SHOWN]],
        "series": {
            "sample_s": SAMPLE_S,
            "queue_depth": [json.loads(raw) for raw in depth_raw],
            "jobs": [{"t": r.finished_at, "outcome": r.outcome.value, "queue_wait_s": r.queue_wait_s, "ttft_s": r.ttft_s,
                      "tokens_per_s": r.tokens_per_s} for r in hour],
        },
    }
