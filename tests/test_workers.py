"""Several workers on one Redis: they split a queue with no job run twice, a killed worker's
batch line is finished by another, a worker whose host clock is wrong is neither reaped nor
allowed to start an expired job, and /v1/models and /readyz follow workers as they come and go."""

import calendar
import json
import os
import signal
import time
from pathlib import Path

import httpx
import openai

from devstack import MODEL, Process, Stack, wait_for
from tests.chats import NO_END, BackgroundChat, chat_body
from tests.test_batches import request_line, run_batch, wait_status

SKEWED_CLOCK = Path(__file__).parent / "skewed_clock"  # its sitecustomize shifts time.time()


def events(s: Stack, job_id: str) -> list[dict]:
    return [json.loads(fields[b"event"]) for _, fields in s.redis.xrange(f"hearth:job:{job_id}:events")]


def started_by(s: Stack, job_id: str) -> list[str]:
    return [e["worker"] for e in events(s, job_id) if e["type"] == "started"]


def name(worker: Process) -> str:
    return worker.env["WORKER_NAME"]


def readyz(s: Stack) -> dict:
    return httpx.get(f"http://127.0.0.1:{s.api_port}/readyz", timeout=10).json()


def served(s: Stack) -> dict[str, int]:
    return {m["id"]: m["workers"] for m in httpx.get(f"{s.base_url}/models", timeout=10).json()["data"]}


def log_lines(worker: Process, msg: str) -> list[dict]:
    return [line for line in (json.loads(t) for t in worker.log().splitlines() if t.startswith("{")) if line["msg"] == msg]


def test_two_workers_split_a_queue_run_no_job_twice_and_models_follow_them(make_stack) -> None:
    s = make_stack()
    a, b = s.start_worker(), s.start_worker()
    s.start_api()
    assert served(s) == {MODEL: 2} and readyz(s)["workers"] == 2
    chats = [BackgroundChat(s, chat_body(f"Count to {i + 3}.", 12)) for i in range(8)]
    for c in chats:
        assert c.join(180).usage and c.usage["completion_tokens"] == 12, c.error
    runs = {str(c.job_id): started_by(s, str(c.job_id)) for c in chats}
    assert all(len(workers) == 1 for workers in runs.values()), runs  # each job started once, by one worker
    assert {workers[0] for workers in runs.values()} == {name(a), name(b)}  # and both took a share
    for worker in (a, b):
        assert sorted(line["job_id"] for line in log_lines(worker, "job completed")) == sorted(
            job for job, workers in runs.items() if workers == [name(worker)])

    b.stop(signal.SIGKILL)
    wait_for(lambda: served(s) == {MODEL: 1}, 10, "/v1/models to count one worker")
    assert readyz(s)["workers"] == 1
    a.stop()
    wait_for(lambda: served(s) == {}, 10, "/v1/models to empty")
    assert readyz(s) == {"status": "unavailable", "reason": readyz(s)["reason"], "models": [], "waiting": [MODEL]}
    s.start_worker()
    assert served(s) == {MODEL: 1} and readyz(s)["models"] == [MODEL]


def test_a_worker_killed_mid_line_leaves_the_line_to_the_other(make_stack) -> None:
    s = make_stack()
    a, b = s.start_worker(), s.start_worker()
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=60)
    batch_id = run_batch(client, [request_line(f"l{i}", "Count to twenty.", 40, logit_bias=NO_END) for i in range(4)])
    on_a: list[str] = []

    def a_runs_a_line() -> bool:
        on_a[:] = [job.decode() for job, worker in s.redis.hgetall("hearth:running").items() if worker.decode() == name(a)]
        return bool(on_a)

    wait_for(a_runs_a_line, 120, "a line running on worker a")
    a.stop(signal.SIGKILL)
    batch = wait_status(client, batch_id, ("completed", "failed"), 300)
    assert batch.status == "completed" and batch.request_counts.completed == 4 and batch.request_counts.failed == 0
    (victim,) = on_a
    assert [line["job_id"] for line in log_lines(a, "job started")].count(victim) == 1
    assert victim not in [line["job_id"] for line in log_lines(a, "job completed")]
    assert [line["job_id"] for line in log_lines(b, "job completed")].count(victim) == 1  # the other finished it
    assert s.api is not None and "batch line requeued" in s.api.log()


def test_a_worker_with_a_wrong_clock_is_not_reaped_nor_starts_expired_jobs(make_stack) -> None:
    s = make_stack(MAX_QUEUE_WAIT_S="1")
    skewed = {"PYTHONPATH": os.pathsep.join([str(SKEWED_CLOCK), os.environ.get("PYTHONPATH", "")]),
              "HEARTH_TEST_CLOCK_SKEW_S": str(-3 * 3600)}  # three hours behind
    api = s.start_api()
    # A chat waits with no worker up; its api dies, and with it the reaper that would end the
    # chat at its start deadline: only the worker's start script can refuse it now.
    with httpx.stream("POST", f"{s.base_url}/chat/completions", json=chat_body("Hello.", 8), timeout=60) as r:
        job_id = r.headers["x-job-id"]
        api.stop(signal.SIGKILL)
    not_after = float(s.redis.hget(f"hearth:job:{job_id}", "not_after") or 0)
    wait_for(lambda: s.redis.time()[0] > not_after, 10, "the chat's start deadline to pass (Redis time)")
    worker = s.start_worker(**skewed)
    wait_for(lambda: s.redis.hget(f"hearth:job:{job_id}", "status") == b"timed_out", 30, "the worker to refuse the expired chat")
    assert [e["type"] for e in events(s, job_id)] == ["started", "error"] and events(s, job_id)[-1]["code"] == "timeout"
    # The worker's clock is three hours behind (its log lines say so), yet Redis's clock
    # judges its heartbeat: a chat far longer than HEARTBEAT_TTL_S runs to its end.
    logged = calendar.timegm(time.strptime(log_lines(worker, "job started")[-1]["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(logged - (time.time() - 3 * 3600)) < 600
    s.start_api()
    assert served(s) == {MODEL: 1}
    chat = BackgroundChat(s, chat_body("Tell me a long story.", 400))
    assert chat.join(180).usage and chat.usage["completion_tokens"] == 400, chat.error
    assert started_by(s, str(chat.job_id)) == [name(worker)]
    assert s.api is not None and "lost" not in s.api.log()
