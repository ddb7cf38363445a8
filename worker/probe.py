"""`python -m worker.probe`: exit 0 when this host's worker has loaded its model and renews
its heartbeat in Redis, else 1. Compose's health check: a worker that is ready, not merely a
process that exists (it loads its model for seconds to minutes first)."""

import socket
import sys
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError

from hearth.contract import WORKERS_KEY, worker_key
from hearth.redis_client import connect, members
from worker.settings import WorkerSettings


def is_mine(settings: WorkerSettings) -> Callable[[str], bool]:
    """The worker's own name if WORKER_NAME is set; else any default name (host.pid) of this
    host, since the probe's pid is not the worker's."""
    if "worker_name" in settings.model_fields_set:
        return lambda name: name == settings.worker_name
    prefix = f"{socket.gethostname()}."
    return lambda name: name.startswith(prefix)


def ready(redis: Redis, mine: Callable[[str], bool]) -> bool:
    names = members(redis.zrange(WORKERS_KEY, 0, -1))
    return any(mine(name) and redis.exists(worker_key(name)) for name in names)


def main() -> int:
    settings = WorkerSettings()
    try:
        return 0 if ready(connect(settings.redis_url), is_mine(settings)) else 1
    except RedisError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
