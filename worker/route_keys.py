"""The route keys (hearth.state_routes) backed by this worker's saved states, deleted once no
state serves them.

Each saved state, in memory (worker.state_cache) or on disk (worker.state_disk, where its file
records them), carries the route keys of the histories it serves: its own conversation's, and
those of the shorter states it superseded (a longer state restores their prefixes too). The
tiers count each key up while a state carries it and down when the state is evicted, replaced
or unloaded; at zero no tier can restore that history, so the key goes, lest a turn wait for a
holder without its state. Deleting is a Redis call: a background thread makes it, never the job
that evicted, and only while the key names this holder (another worker may have answered the
conversation since).
"""

import logging
import threading
from collections import Counter, deque
from collections.abc import Iterable

from redis import Redis
from redis.exceptions import RedisError

from hearth.state_routes import FORGET_ROUTE_LUA

log = logging.getLogger(__name__)


class RouteKeys:
    def __init__(self, redis: Redis, holder: str):
        self._redis, self.holder = redis, holder
        self._counts: Counter[str] = Counter()
        self._gone: deque[str] = deque()
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="route-keys", daemon=True)
        self._thread.start()

    def hold(self, keys: Iterable[str]) -> None:
        with self._cond:
            self._counts.update(keys)

    def release(self, keys: Iterable[str]) -> None:
        """A state that carried `keys` is gone; those no other state carries are deleted."""
        with self._cond:
            self._counts.subtract(keys)
            self._sweep(keys)

    def check(self, keys: Iterable[str]) -> None:
        """Delete those of `keys` that no state carries (a state no tier took)."""
        with self._cond:
            self._sweep(keys)

    def _sweep(self, keys: Iterable[str]) -> None:
        for key in keys:
            if self._counts[key] <= 0:
                self._counts.pop(key, None)
                self._gone.append(key)
        self._cond.notify_all()

    def close(self, timeout_s: float = 5) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._gone or self._closed)
                if not self._gone:
                    return
                key = self._gone[0]
                due = self._counts[key] <= 0  # held again meanwhile: the same history answered again
            try:
                if due and self._redis.eval(FORGET_ROUTE_LUA, 1, key, self.holder):
                    log.info("state route removed: no saved state serves it any more")
            except RedisError as exc:  # the key expires by itself
                log.warning("could not remove a state route: %s", exc)
            with self._cond:
                self._gone.popleft()
                self._cond.notify_all()
