"""Surviving failures: a killed worker, a restarted Redis, a restarted api."""

import signal
import time

import httpx
import pytest

from devstack import RedisServer, Stack, wait_for
from hearth.sse import read_sse
from tests.chats import BUSY
from tests.sse import job_events, stream_in_background


def test_killed_worker_fails_its_job_fast_and_a_new_worker_serves_the_queue(make_stack) -> None:
    s = make_stack()
    worker = s.start_worker()
    s.start_api()
    running, started = stream_in_background(s, BUSY)
    assert started.wait(120)
    waiting, _ = stream_in_background(s, {**BUSY, "max_tokens": 8})
    killed_at = time.monotonic()
    worker.stop(signal.SIGKILL)
    wait_for(lambda: running.get("closed"), 30, "the running stream to end")
    assert running["error"]["code"] == "worker_lost"
    assert time.monotonic() - killed_at < 15  # the heartbeat TTL (2 s here) plus polling, not RQ's minutes
    assert httpx.get(f"{s.base_url}/jobs/{running['id']}").json()["status"] == "failed"
    assert httpx.get(f"{s.base_url}/jobs/{waiting['id']}").json()["status"] == "queued"  # nothing queued is lost
    s.start_worker()
    wait_for(lambda: waiting.get("closed"), 120, "the queued job to be served")
    assert waiting["error"] is None and waiting["text"]
    assert job_events(s.base_url, waiting["id"])[-1].event == "done"


@pytest.fixture
def own_redis(log_dir):
    server = RedisServer(log_dir)
    yield server
    server.stop()


def test_redis_restart_gives_503_then_recovers_without_restarts(own_redis: RedisServer, log_dir) -> None:
    s = Stack(own_redis, 0, log_dir)
    try:
        s.start_worker()
        s.start_api()
        body = {"model": "any", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert httpx.post(f"{s.base_url}/chat/completions", json=body, timeout=60).status_code == 200
        own_redis.stop()
        r = httpx.post(f"{s.base_url}/chat/completions", json=body, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "redis_unavailable"
        assert httpx.get(f"http://127.0.0.1:{s.api_port}/readyz", timeout=30).status_code == 503
        own_redis.start()
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{s.api_port}/readyz").status_code == 200, 60, "readiness after Redis returned")
        r = httpx.post(f"{s.base_url}/chat/completions", json=body, timeout=120)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
        assert all(w.popen.poll() is None for w in s.workers) and s.api.popen.poll() is None
    finally:
        s.stop()


def test_api_restart_mid_stream_resumes_from_last_event_id(make_stack) -> None:
    s = make_stack()
    s.start_worker()
    s.start_api()
    chat, _ = stream_in_background(s, {**BUSY, "max_tokens": 200})  # its connection dies with the api
    job_id = chat["id"]
    before: list = []
    # Follow the job's own stream for a while, then lose the api under it.
    with httpx.stream("GET", f"{s.base_url}/jobs/{job_id}/events", timeout=60) as r:
        for sse in read_sse(r.iter_lines()):
            if sse.data:
                before.append(sse)
            if sum(e.event == "token" for e in before) >= 3:
                break
    s.api.stop(signal.SIGTERM)
    s.start_api()
    after = job_events(s.base_url, job_id, last_event_id=before[-1].id)
    assert after[-1].event == "done"
    full = job_events(s.base_url, job_id)  # read at once, so its tokens arrive coalesced
    ids = [tuple(map(int, e.id.split("-"))) for e in before + after]
    assert ids == sorted(set(ids))  # nothing repeated, in order
    text = "".join(e.json()["text"] for e in before + after if e.event == "token")
    assert text == "".join(e.json()["text"] for e in full if e.event == "token")
    assert after[-1].json()["usage"]["completion_tokens"] == 200
