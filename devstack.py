"""The development stack: real redis-server, worker, api and ui processes, started and stopped
from Python for the tests, the bench and the soak (never for production: `make run` supervises
those)."""

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import httpx
import redis

from hearth.redis_server import server_args

ROOT = Path(__file__).resolve().parent
MODEL = "SmolLM2-135M-Instruct.Q4_1"  # the embedded model's id
INTERACTIVE = f"interactive:{MODEL}"  # its queues
BATCH = f"batch:{MODEL}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], object], timeout: float, what: str, proc: "Process | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.log()}")
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}" + (f":\n{proc.log()}" if proc else ""))


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name, self.args, self.env = name, args, env
        self.log_path = log_dir / f"{name}.{time.monotonic_ns()}.log"
        self.popen = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class RedisServer:
    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.data = Path(tempfile.mkdtemp(prefix="hearth-redis-"))
        self._log_dir = log_dir
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        # A database per stack (unused_db): a test session starts more than a Hearth's 64.
        self.proc = Process("redis", server_args(self.port, self.data, persist=True, databases=STACK_DATABASES), dict(os.environ), self._log_dir)
        wait_for(lambda: redis.Redis(port=self.port).ping(), 10, "redis-server", self.proc)

    def stop(self) -> None:
        self.proc.stop()


STACK_DATABASES = 1024
_dbs = itertools.count(1)  # each stack gets its own Redis database: its own queues and keys


def unused_db(redis_server: RedisServer) -> str:
    """The URL of a Redis database that no other stack of this session uses."""
    db = next(_dbs)
    if db >= STACK_DATABASES:
        raise RuntimeError(f"more than {STACK_DATABASES - 1} stacks in one session: raise STACK_DATABASES")
    return redis_server.url(db)


class Stack:
    """A worker and an api on one Redis database, with settings given as environment."""

    def __init__(self, redis_server: RedisServer, db: int | None, log_dir: Path, **env: str):
        self.redis_url = unused_db(redis_server) if db is None else redis_server.url(db)
        self.redis = redis.Redis.from_url(self.redis_url)
        self.redis.flushdb()
        self.log_dir = log_dir
        self.api_port = free_port()
        self.states = Path(tempfile.mkdtemp(prefix="hearth-states-"))
        self.blobs = Path(tempfile.mkdtemp(prefix="hearth-blobs-"))
        self.env = {**os.environ, "REDIS_URL": self.redis_url, "API_PORT": str(self.api_port), "LOG_FORMAT": "json",
                    "HEARTBEAT_INTERVAL_S": "0.5", "HEARTBEAT_TTL_S": "2",
                    # Accounts and the per-user cap have their own tests (test_auth.py,
                    # test_fairness.py); elsewhere every request is one user's.
                    "AUTH": "off", "MAX_WAITING_PER_USER": "16",
                    # One thread: llama.cpp's threads spin-wait on each other, so two models
                    # generating at once on 2 shared cores (a stack ending while the next test
                    # starts, another process) slow each other down a hundredfold.
                    "N_THREADS": "1",
                    # Saved model states on disk: the stack's own, never the checkout's `.hearth`.
                    "STATE_DIR": str(self.states),
                    # Documents' bytes: the stack's own folder too.
                    "BLOB_DIR": str(self.blobs),
                    # The suite's requests name `model: "any"`: the stack's one model answers
                    # them, as an operator's DEFAULT_MODEL makes it (test_models.py routes).
                    "DEFAULT_MODEL": Path(env["MODEL_PATH"]).stem if "MODEL_PATH" in env else MODEL, **env}
        self.workers: list[Process] = []
        self.api: Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v1"

    def start_worker(self, wait: bool = True, unset: Sequence[str] = (), **env: str) -> Process:
        """A worker with the stack's settings, `env` on top, less the variables named in `unset`."""
        name = f"test-worker-{len(self.workers)}-{time.monotonic_ns()}"
        given = {k: v for k, v in {**self.env, "WORKER_NAME": name, **env}.items() if k not in unset}
        proc = Process("worker", [sys.executable, "-m", "worker"], given, self.log_dir)
        self.workers.append(proc)
        if wait:
            wait_for(lambda: bool(self.redis.exists(f"hearth:worker:{name}")), 60, "the worker's model", proc)
        return proc

    def start_api(self) -> Process:
        self.api = Process("api", [sys.executable, "-m", "api"], self.env, self.log_dir)
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{self.api_port}/healthz").status_code == 200, 30, "the api", self.api)
        return self.api

    def logs(self) -> str:
        return "\n".join(p.log() for p in [*self.workers, *([self.api] if self.api else [])])

    def stop(self) -> None:
        # A worker stopping mid-chat finishes it first (RQ's warm shutdown); a test's stack
        # need not wait for a long answer nobody reads.
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            proc.stop(timeout=5)
        shutil.rmtree(self.states, ignore_errors=True)
        shutil.rmtree(self.blobs, ignore_errors=True)



class UiServer:
    """A ui process talking to the api of `env` (a `Stack.env`); its state (its key for what
    browsers keep, Gradio's cache) in a temporary folder, not the repository's `.hearth`."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.port, self.data, self.log_dir = free_port(), Path(tempfile.mkdtemp(prefix="hearth-ui-")), log_dir
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {**env, "UI_PORT": str(self.port), "LOG_FORMAT": "json", "HEARTH_DATA": str(self.data),
                    "GRADIO_TEMP_DIR": str(self.data / "gradio")}
        self.start()

    def start(self) -> None:
        self.proc = Process("ui", [sys.executable, "-m", "ui"], self.env, self.log_dir)
        wait_for(lambda: httpx.get(self.url).status_code == 200, 60, "the ui", self.proc)

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.proc.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # Gradio's own output, if any
            if isinstance(record, dict):
                lines.append(record)
        return lines

def serve(redis_server: RedisServer, log_dir: Path, **env: str) -> Generator[Stack]:
    """A stack with its worker and api up until the generator is closed: the body of a
    module- or session-scoped fixture (`yield from serve(...)`)."""
    s = Stack(redis_server, None, log_dir, **env)
    try:
        s.start_worker()
        s.start_api()
        yield s
    finally:
        s.stop()


def add_user(stack: Stack, name: str, admin: bool = False) -> str:
    """`hearth users add NAME`, as an operator runs it; returns the printed API key."""
    args = [sys.executable, "-m", "api.accounts.cli", "users", "add", name] + (["--admin"] if admin else [])
    out = subprocess.run(args, env=stack.env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]

