"""The worker's two background threads: a liveness heartbeat and a cancel listener."""

import logging
import threading
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError

from hearth.contract import ANY_MODEL, CANCEL_CHANNEL, EMBEDDING_MODELS_KEY, MODELS_KEY, WORKERS_KEY, preempt_channel, worker_key
from hearth.heartbeat import WorkerInfo

log = logging.getLogger(__name__)


# The index entry's score is when the heartbeat expires, in Redis's time: the reaper compares it
# with the same clock, so a worker whose host clock is off is neither reaped early nor kept.
# The models it serves are marked as seen now in the registry of models (KEYS[2]), and those
# it embeds with in theirs (KEYS[3]), which the api routes by while their workers are away
# (api.models.routing).
# KEYS: the worker index, the model registries; ARGV: ttl, worker name, how many models it
# serves, its models..., the models it embeds with...
_RENEW_LUA = """
local t = redis.call('TIME')
local now = t[1] + t[2] / 1e6
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
local served = 3 + tonumber(ARGV[3])
for i = 4, #ARGV do redis.call('ZADD', i <= served and KEYS[2] or KEYS[3], now, ARGV[i]) end
"""


class Heartbeat:
    """Keeps `hearth:worker:<name>` alive while this process is. RQ's SimpleWorker sends no
    heartbeat while a job runs, and RQ notices a dead worker only after minutes; this key
    expires `ttl_s` after the process stops, which is how the api tells a waiting client."""

    def __init__(self, redis: Redis, name: str, models: list[str], embedding_models: list[str],
                 info: Callable[[], WorkerInfo], interval_s: float, ttl_s: int):
        self._redis, self._name, self._key, self._info = redis, name, worker_key(name), info
        self._models, self._embedding_models = models, embedding_models
        self._interval, self._ttl = interval_s, ttl_s
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        pipe = self._redis.pipeline()
        pipe.hset(self._key, mapping=self._info().fields())
        pipe.expire(self._key, self._ttl)
        pipe.eval(_RENEW_LUA, 3, WORKERS_KEY, MODELS_KEY, EMBEDDING_MODELS_KEY, self._ttl, self._name, len(self._models),
                  *self._models, *self._embedding_models)
        pipe.execute()

    def poke(self) -> None:
        """Beat now, from the heartbeat's thread: what the api estimates waits with (the
        worker's speed, its state) has just changed."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.beat()
            except RedisError as exc:
                log.warning("heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
        try:
            self._redis.delete(self._key)
            self._redis.zrem(WORKERS_KEY, self._name)
        except RedisError:
            pass


class CancelListener:
    """Hears cancel requests over pub/sub, so the generation loop checks a local flag per
    token instead of asking Redis (a request made before the job started is seen by the start
    script, hearth.lifecycle). Also hears that a chat was queued for one of this worker's
    models: the `preempt` flag, on which a running batch line gives way (chats go first,
    whichever model they ask for)."""

    def __init__(self, redis: Redis, models: list[str], retry_s: float = 0.5):
        self._redis, self._retry = redis, retry_s
        self._preempt_channels = {preempt_channel(model).encode() for model in (*models, ANY_MODEL)}
        self._job: str | None = None
        self._flag = threading.Event()
        self.preempt = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="cancel-listener", daemon=True).start()

    def watch(self, job_id: str) -> threading.Event:
        """The cancel flag of the job starting now. Chats queued before it were dequeued
        before it (interactive first): the preempt flag starts clear."""
        with self._lock:
            self._job = job_id
            self._flag = threading.Event()
            self.preempt.clear()
            return self._flag

    def cancel_current(self) -> None:
        with self._lock:
            self._flag.set()

    def _hear(self, job_id: str) -> None:
        with self._lock:
            if job_id == self._job:
                self._flag.set()

    def _run(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CANCEL_CHANNEL, *self._preempt_channels)
                for message in pubsub.listen():
                    if message["channel"] in self._preempt_channels:
                        self.preempt.set()
                    else:
                        self._hear(message["data"].decode())
            except RedisError as exc:
                log.warning("cancel listener lost Redis, resubscribing: %s", exc)
                time.sleep(self._retry)
