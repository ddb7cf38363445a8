"""`make run`'s supervisor (hearth/supervise.py): a crash is not an outage, Ctrl-C stops all."""

import itertools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis

from devstack import ROOT, RedisServer, free_port, unused_db, wait_for
from hearth.contract import WORKERS_KEY, worker_key
from hearth.supervise import read_procfile, selected, supervisord_args, write_conf

KILLED = "exited: worker (terminated by SIGKILL; not expected)"


def state(pid: int) -> str | None:
    """The process's state letter from /proc, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def alive(pid: int) -> bool:
    return state(pid) not in (None, "Z")  # a zombie has ended, only its exit status is left


def descendants(root: int) -> set[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def worker_pids(r: redis.Redis) -> set[int]:
    """Pids of workers with a live heartbeat (WORKER_NAME defaults to host.pid.random)."""
    names = [n.decode() for n in r.zrange(WORKERS_KEY, 0, -1)]
    return {int(n.split(".")[-2]) for n in names if r.exists(worker_key(n))}


def probe(redis_url: str) -> int:
    env = {**os.environ, "REDIS_URL": redis_url}
    env.pop("WORKER_NAME", None)
    return subprocess.run([sys.executable, "-m", "worker.probe"], cwd=ROOT, env=env, timeout=60).returncode


def test_worker_probe_fails_without_a_ready_worker(redis_server: RedisServer) -> None:
    assert probe(unused_db(redis_server)) == 1
    assert probe("redis://127.0.0.1:1/0") == 1  # no Redis at all


def test_procfile_lists_every_process_and_an_external_redis_leaves_redis_out() -> None:
    processes = read_procfile((ROOT / "Procfile").read_text())
    assert list(processes) == ["redis", "worker", "api", "ui"]
    assert list(selected(processes, external_redis=True)) == ["worker", "api", "ui"]


class Run:
    """`make run` as a person at a terminal runs it: its own process group, Ctrl-C to it."""

    def __init__(self, tmp_path: Path, redis_url: str):
        self.log_path, self.redis_url = tmp_path / "run.log", redis_url
        self.api = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if k != "WORKER_NAME"}
        env.update({
            # What the Makefile adds: the venv first on PATH, text logs for a person.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", "LOG_FORMAT": "text",
            "REDIS_URL": redis_url, "HEARTH_DATA": str(tmp_path / "hearth"), "API_PORT": self.api.rpartition(":")[2],
            "UI_PORT": str(free_port()), "AUTH": "off", "N_THREADS": "1", "HEARTBEAT_INTERVAL_S": "0.5", "HEARTBEAT_TTL_S": "2",
        })
        self.popen = subprocess.Popen([sys.executable, "-m", "hearth.supervise"], cwd=ROOT, env=env, start_new_session=True,
                                      stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            wait_for(check, timeout, what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; `make run` printed:\n{self.log()}") from None
        assert self.popen.poll() is None, f"the supervisor exited:\n{self.log()}"

    def ctrl_c(self) -> None:
        os.killpg(self.popen.pid, signal.SIGINT)  # what the terminal sends to its foreground group


@pytest.fixture
def run(tmp_path: Path, redis_server: RedisServer) -> Iterator[Run]:
    url = unused_db(redis_server)
    redis.Redis.from_url(url).flushdb()
    r = Run(tmp_path, url)
    yield r
    if r.popen.poll() is None:  # the test failed before its Ctrl-C
        r.popen.kill()
        r.popen.wait()


def test_a_killed_worker_is_restarted_while_the_rest_keep_serving_and_ctrl_c_stops_all(run: Run) -> None:
    r = redis.Redis.from_url(run.redis_url)
    run.wait(lambda: httpx.get(f"{run.api}/readyz").status_code == 200, 180, "/readyz")
    run.wait(lambda: all(f"success: {name} entered RUNNING state" in run.log() for name in ("worker", "api", "ui")), 60, "every process up")
    assert "spawned: 'redis'" not in run.log()  # REDIS_URL is set: Redis is someone else's
    assert probe(run.redis_url) == 0  # compose's health check of the worker
    (old,) = worker_pids(r)
    others = [int(pid) for pid in re.findall(r"spawned: '(?:api|ui)' with pid (\d+)", run.log())]
    assert len(others) == 2

    os.kill(old, signal.SIGKILL)  # as the kernel's OOM killer does
    healthz: list[int] = []

    def restarted() -> bool:
        healthz.append(httpx.get(f"{run.api}/healthz", timeout=5).status_code)
        return KILLED in run.log() and bool(worker_pids(r) - {old})

    run.wait(restarted, 120, "a new worker's heartbeat")
    (new,) = worker_pids(r) - {old}
    assert run.log().index(KILLED) < run.log().index(f"spawned: 'worker' with pid {new}")
    assert healthz and set(healthz) == {200}  # the api answered all along
    assert all(alive(pid) for pid in others)  # the api and the ui were not restarted
    assert new in descendants(run.popen.pid)

    children = descendants(run.popen.pid)
    run.ctrl_c()
    run.popen.wait(60)
    assert run.popen.returncode == 0, run.log()
    wait_for(lambda: not any(alive(pid) for pid in children), 10, "every child to end")
    for name in ("worker", "api", "ui"):
        assert f"stopped: {name}" in run.log()


def test_a_process_that_keeps_dying_is_retried_later_and_later_while_the_others_run(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text('steady: python -c "import time; time.sleep(600)"\ncrash: python -c "raise SystemExit(3)"\n')
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "HEARTH_DATA": str(tmp_path / "hearth")}
    log = tmp_path / "run.log"
    sup = subprocess.Popen(supervisord_args(write_conf(tmp_path / "Procfile", env)), cwd=tmp_path, env=env,
                           stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def spawns() -> list[str]:
        return re.findall(r"^(\S+ \S+) INFO spawned: 'crash'", log.read_text(), re.M)

    try:
        wait_for(lambda: len(spawns()) >= 4, 30, "three retries of the crashing process")
        (steady,) = re.findall(r"spawned: 'steady' with pid (\d+)", log.read_text())
        assert alive(int(steady))  # untouched by its neighbour's crashes
        assert "exited: crash (exit status 3; not expected)" in log.read_text()
        times = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t in spawns()[:4]]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        # Backoff: one more second of wait per quick failure (plus the run and supervisord's tick).
        assert all(gap >= wait for gap, wait in zip(gaps, (1, 2, 3))), gaps
    finally:
        sup.send_signal(signal.SIGINT)
        sup.wait(30)
