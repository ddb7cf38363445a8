"""What the cases measure: the real stack (redis-server, worker, api processes) and, on demand,
the same model loaded in this process with the same settings."""

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from types import TracebackType

import llama_cpp
import redis
from redis.asyncio import Redis as AsyncRedis
from rq.job import Job, JobStatus

from api.accounts.users import UserStore
from api.settings import ApiSettings
from devstack import RedisServer, Stack
from hearth.contract import RQ_SERIALIZER
from worker.engine import Engine
from worker.models import catalog, load_vocab
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

# The processes get every setting of the bench's WorkerSettings and ApiSettings (so the
# in-process Engine built from the same object is a like-for-like baseline, and the api runs
# as in production: auth on, production caps and heartbeat, which devstack relaxes for
# tests); only what tells processes apart is left to the Stack.
PER_PROCESS = ("redis_url", "api_port", "worker_name", "state_dir")
BAN = -100.0  # the most negative logit bias OpenAI's api accepts
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SETTLE_S = 0.25  # after a measurement: llama.cpp threads and the worker's bookkeeping go quiet


def process_cpu_seconds(pid: int) -> float:
    """From /proc/PID/stat (Linux): utime + stime, threads that ended included; 0 elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def end_tokens(model_path: str) -> dict[int, float]:
    """A logit bias banning every end-of-generation token of the model (EOS, <|im_end|>…)."""
    llama = load_vocab(model_path)
    vocab = llama._model.vocab
    eog = [t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    assert llama.token_eos() in eog, "the model's EOS is not an end-of-generation token"
    return {t: BAN for t in eog}


class Rig:
    def __init__(self, settings: WorkerSettings, api_settings: ApiSettings):
        self.settings, self.api_settings = settings, api_settings
        self.log_dir = Path(tempfile.mkdtemp(prefix="hearth-bench-"))
        self._redis_server: RedisServer | None = None
        self._stack: Stack | None = None
        self._keys: dict[str, str] = {}

    def __enter__(self) -> "Rig":
        log.info("starting redis, worker and api (logs in %s)", self.log_dir)
        self._redis_server = RedisServer(self.log_dir)
        values = {**self.api_settings.model_dump(), **self.settings.model_dump()}
        env = {name.upper(): str(value) for name, value in values.items() if name not in PER_PROCESS}
        self._stack = Stack(self._redis_server, 0, self.log_dir, **env)
        try:
            self._stack.start_worker()
            self._stack.start_api()
        except BaseException:
            self._stop(failed=True)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop(failed=exc is not None)

    def _stop(self, failed: bool) -> None:
        if self._stack is not None:
            self._stack.stop()
        if self._redis_server is not None:
            self._redis_server.stop()
            shutil.rmtree(self._redis_server.data, ignore_errors=True)
        if failed:
            log.error("bench failed; process logs are in %s", self.log_dir)
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    @property
    def stack(self) -> Stack:
        assert self._stack is not None, "use Rig as a context manager"
        return self._stack

    def swap_worker(self, unset: Sequence[str] = (), keep_states: bool = False, **env: str) -> None:
        """Replace the worker with one started with `env` on top of the bench's settings, less
        `unset`; with the model states the one before saved on disk if `keep_states`, else none."""
        self.stack.workers[0].stop()
        if not keep_states:
            shutil.rmtree(self.stack.states)
            self.stack.states.mkdir()
        fresh = self.stack.start_worker(wait=True, unset=unset, **env)
        self.stack.workers[:] = [fresh]

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    @property
    def redis(self) -> redis.Redis:
        return self.stack.redis

    def api_keys(self, users: list[str]) -> dict[str, str]:
        """An API key for each of `users`, created on first use as `hearth users add` does."""
        missing = [u for u in users if u not in self._keys]

        async def add() -> None:
            redis = AsyncRedis.from_url(self.stack.redis_url)
            try:
                store = UserStore(redis)
                for user in missing:
                    self._keys[user] = await store.add(user)
            finally:
                await redis.aclose()

        if missing:
            asyncio.run(add())
        return {u: self._keys[u] for u in users}

    @cached_property
    def engine(self) -> Engine:
        """The in-process baseline: built from the settings the worker was started with."""
        log.info("loading the model in-process")
        (model,) = catalog(self.settings).values()
        return Engine(self.settings, model, None)

    @cached_property
    def eog_ban(self) -> dict[int, float]:
        return end_tokens(self.settings.model_path)

    def pids(self) -> dict[str, int]:
        """Each process of the bench by name; `bench` is this one (the client, the in-process model)."""
        return {"worker": self.stack.workers[0].popen.pid, "api": self.stack.api.popen.pid if self.stack.api else 0,
                "redis": self._redis_server.proc.popen.pid if self._redis_server else 0, "bench": os.getpid()}

    def cpu_seconds(self, pids: Mapping[str, int] | None = None) -> dict[str, float]:
        """CPU time used so far (user + system, all threads) by each of `pids` (default: `pids()`)."""
        return {name: process_cpu_seconds(pid) for name, pid in (pids or self.pids()).items()}

    def wait_idle(self, job_id: str, timeout: float = 30) -> None:
        """Return once the worker has finished `job_id`'s bookkeeping."""
        deadline = time.monotonic() + timeout
        while Job.fetch(job_id, connection=self.redis, serializer=RQ_SERIALIZER).get_status() != JobStatus.FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
            time.sleep(0.01)

    def settle(self) -> None:
        time.sleep(SETTLE_S)
