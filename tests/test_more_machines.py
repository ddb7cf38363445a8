"""A Redis that requires a password, as the README's "More machines" sets it up: a worker
started with only REDIS_URL and MODEL_PATH serves the api through it, `make run` leaves such a
Redis alone, and the password shows in no log or file."""

import os
import sys
from pathlib import Path

import httpx
import pytest
import redis

from devstack import MODEL, ROOT, Process, RedisServer, Stack, wait_for
from hearth.redis_client import redacted
from hearth.redis_server import server_args
from hearth.supervise import write_conf
from worker.settings import embedded_model_path

PASSWORD = "s3cret-pw"


class PasswordRedis(RedisServer):
    def url(self, db: int = 0) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        args = [*server_args(self.port, self.data, persist=False), "--requirepass", PASSWORD]
        self.proc = Process("redis", args, dict(os.environ), self._log_dir)
        wait_for(lambda: redis.Redis(port=self.port, password=PASSWORD).ping(), 10, "redis-server", self.proc)


def test_a_worker_with_only_redis_url_and_model_path_serves_through_a_password_redis(log_dir: Path) -> None:
    server = PasswordRedis(log_dir)
    s = Stack(server, 0, log_dir)
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()  # no password, no Redis
        s.start_api()
        # As on another machine: nothing but where Redis is and which model to serve (and
        # one thread, as every test worker: the machine is shared).
        bare = {"PATH": os.environ["PATH"], "REDIS_URL": s.redis_url, "MODEL_PATH": embedded_model_path(), "N_THREADS": "1"}
        worker = Process("worker", [sys.executable, "-m", "worker"], bare, log_dir)
        s.workers.append(worker)
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{s.api_port}/readyz").status_code == 200, 60, "the worker", worker)
        answer = httpx.post(f"{s.base_url}/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}, timeout=60)
        assert answer.status_code == 200 and answer.json()["model"] == MODEL
        assert PASSWORD not in s.logs()
    finally:
        s.stop()
        server.stop()


def test_make_run_with_a_redis_url_starts_no_redis_and_writes_no_password(tmp_path: Path) -> None:
    url = f"redis://:{PASSWORD}@10.0.0.2:6379/0"
    conf = write_conf(ROOT / "Procfile", {"REDIS_URL": url, "HEARTH_DATA": str(tmp_path)}).read_text()
    assert "[program:redis]" not in conf and "[program:worker]" in conf
    assert PASSWORD not in conf  # processes inherit REDIS_URL from make run's environment
    assert redacted(url) == "redis://***@10.0.0.2:6379/0" and PASSWORD not in redacted(url)
