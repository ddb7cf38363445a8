"""Ending jobs: cancel while queued or running, and a client that goes away frees the worker."""

import httpx

from devstack import INTERACTIVE, Stack, wait_for
from tests.chats import BUSY
from tests.sse import job_events, stream_in_background


def ms(event_id: str) -> int:
    return int(event_id.split("-")[0])


def test_cancel_running_job_stops_it_and_the_next_starts_at_once(stack: Stack) -> None:
    running, started = stream_in_background(stack, BUSY)
    assert started.wait(120)
    waiting, _ = stream_in_background(stack, {**BUSY, "max_tokens": 5})
    seconds, micros = stack.redis.time()  # the clock that stamps stream ids
    asked_ms = seconds * 1000 + micros // 1000
    r = httpx.post(f"{stack.base_url}/jobs/{running['id']}/cancel")
    assert r.status_code == 200
    wait_for(lambda: running.get("closed"), 30, "the cancelled stream to end")
    assert running["error"]["code"] == "cancelled"
    cancelled = job_events(stack.base_url, running["id"])
    assert cancelled[-1].event == "error" and cancelled[-1].json()["code"] == "cancelled"
    # It stopped at the cancel, not at its max_tokens: ended within a second of the request.
    assert 0 <= ms(cancelled[-1].id) - asked_ms < 1000
    assert sum(e.json()["tokens"] for e in cancelled if e.event == "token") > 0
    nxt = job_events(stack.base_url, waiting["id"])
    assert nxt[-1].event == "done"
    # Redis stamps stream entries: the next job started within a second of the cancel.
    assert ms(nxt[0].id) - ms(cancelled[-1].id) < 1000
    assert httpx.get(f"{stack.base_url}/jobs/{running['id']}").json()["status"] == "cancelled"


def test_cancel_queued_job_removes_it(stack: Stack) -> None:
    running, started = stream_in_background(stack, BUSY)
    assert started.wait(120)
    waiting, _ = stream_in_background(stack, {**BUSY, "max_tokens": 5})
    wait_for(lambda: stack.redis.llen(f"rq:queue:{INTERACTIVE}") == 1, 10, "the second job to queue")
    assert httpx.get(f"{stack.base_url}/jobs/{waiting['id']}").json()["status"] == "queued"
    assert httpx.post(f"{stack.base_url}/jobs/{waiting['id']}/cancel").json()["status"] == "cancelled"
    wait_for(lambda: waiting.get("closed"), 30, "the queued stream to end")
    assert waiting["error"]["code"] == "cancelled" and waiting["text"] == ""
    assert stack.redis.llen(f"rq:queue:{INTERACTIVE}") == 0
    httpx.post(f"{stack.base_url}/jobs/{running['id']}/cancel").raise_for_status()
    wait_for(lambda: running.get("closed"), 30, "the running stream to end")
    # The worker never ran the cancelled job: its log holds only the api's cancel event.
    assert [e.event for e in job_events(stack.base_url, waiting["id"])] == ["error"]


def test_client_that_disconnects_frees_the_worker(stack: Stack) -> None:
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json={**BUSY, "stream": True}, timeout=120) as r:
        job_id = r.headers["x-job-id"]
        for line in r.iter_lines():  # leave once the model is generating
            if '"content": "' in line and '"content": ""' not in line:
                break
    # The connection is closed: the api cancels the job and the worker goes idle.
    wait_for(lambda: httpx.get(f"{stack.base_url}/jobs/{job_id}").json()["status"] == "cancelled", 15, "the cancel")
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{stack.api_port}/readyz").json()["busy"] == 0, 10, "an idle worker")
    reply = httpx.post(f"{stack.base_url}/chat/completions", json={**BUSY, "max_tokens": 3}, timeout=60)
    assert reply.json()["usage"]["completion_tokens"] == 3
