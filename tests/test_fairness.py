"""Many people, one worker: fair order, caps answered with 429, and where you stand in line."""

import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from devstack import INTERACTIVE, Stack, add_user, wait_for
from hearth.contract import QueuedEvent
from hearth.sse import read_sse
from tests.chats import BUSY
from tests.sse import stream_in_background


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def occupy(stack: Stack, key: str) -> str:
    """Start a long job and return once the worker is generating it."""
    job, started = stream_in_background(stack, BUSY, key)
    assert started.wait(120), "the busy job never started"
    return job["id"]


def cancel(stack: Stack, key: str, job_id: str) -> None:
    httpx.post(f"{stack.base_url}/jobs/{job_id}/cancel", headers=auth(key)).raise_for_status()


def test_five_users_three_requests_each_are_served_round_robin(make_stack) -> None:
    s = make_stack(AUTH="on", MAX_WAITING_PER_USER="3")
    s.start_worker()
    s.start_api()
    keys = {name: add_user(s, name) for name in ("u1", "u2", "u3", "u4", "u5")}
    blocker = occupy(s, keys["u1"])
    queued: list[str] = []

    def ask(name: str, i: int) -> tuple[str, str, str]:
        client = openai.OpenAI(base_url=s.base_url, api_key=keys[name], max_retries=0, timeout=300)
        raw = client.chat.completions.with_raw_response.create(
            model="any", messages=[{"role": "user", "content": f"Fact {i} about owls, please."}], max_tokens=12, stream=True)
        queued.append(raw.headers["x-job-id"])
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return name, raw.headers["x-job-id"], text

    with ThreadPoolExecutor(15) as pool:
        futures = [pool.submit(ask, name, i) for name in keys for i in range(3)]
        wait_for(lambda: len(queued) == 15, 60, "15 queued jobs")
        cancel(s, keys["u1"], blocker)
        results = [f.result(timeout=300) for f in futures]

    started = []
    for name, job_id, text in results:
        r = httpx.get(f"{s.base_url}/jobs/{job_id}", headers=auth(keys[name]))
        assert r.json()["status"] == "completed" and text
        with httpx.stream("GET", f"{s.base_url}/jobs/{job_id}/events", headers=auth(keys[name]), timeout=30) as resp:
            first = next(sse for sse in read_sse(resp.iter_lines()) if sse.event == "started")
        started.append((first.id, name))
    order = [name for _, name in sorted(started, key=lambda x: tuple(map(int, x[0].split("-"))))]
    for round_ in range(3):
        assert sorted(order[round_ * 5 : round_ * 5 + 5]) == sorted(keys), order


def test_caps_answer_429_with_retry_after(make_stack) -> None:
    s = make_stack(AUTH="on", MAX_WAITING_PER_USER="2", MAX_QUEUED="4")
    s.start_worker()
    s.start_api()
    keys = {name: add_user(s, name) for name in ("ann", "ben", "cal")}
    blocker = occupy(s, keys["cal"])
    body = {"model": "any", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    queue = f"rq:queue:{INTERACTIVE}"

    def submit(name: str) -> httpx.Response | None:
        """None once the request waits in the queue (admitted), or its answer (rejected)."""
        # Non-streamed requests hold their connection until answered: post them from threads.
        result: dict[str, object] = {}
        waiting = s.redis.llen(queue)

        def run() -> None:
            try:
                result["r"] = httpx.post(f"{s.base_url}/chat/completions", json=body, headers=auth(keys[name]), timeout=300)
            except httpx.TransportError as exc:  # after the test (its stack stopped), nobody looks
                result["error"] = exc

        threading.Thread(target=run, daemon=True).start()
        wait_for(lambda: bool(result) or s.redis.llen(queue) > waiting, 30, f"{name}'s request to be queued or answered")
        assert "error" not in result, result
        return result.get("r")  # type: ignore[return-value]  # "r" only ever holds run()'s Response

    assert submit("ann") is None and submit("ann") is None  # two waiting: admitted
    rejected = submit("ann")
    assert rejected is not None and rejected.status_code == 429
    assert rejected.json()["error"]["code"] == "rate_limit_exceeded" and "2 requests waiting" in rejected.json()["error"]["message"]
    assert int(rejected.headers["retry-after"]) >= 1
    assert submit("ben") is None and submit("ben") is None  # the queue now holds 4
    full = submit("cal")
    assert full is not None and full.status_code == 429 and "busy" in full.json()["error"]["message"]
    with openai.OpenAI(base_url=s.base_url, api_key=keys["cal"], max_retries=0) as client:
        try:
            client.chat.completions.create(**body)
            raise AssertionError("expected a 429")
        except openai.RateLimitError as exc:
            assert exc.response.headers["retry-after"]
    assert s.redis.llen(f"rq:queue:{INTERACTIVE}") == 4  # nothing rejected was queued
    cancel(s, keys["cal"], blocker)


def test_queue_position_and_estimate_count_down(make_stack) -> None:
    s = make_stack(POLL_S="0.2")  # each place in line lasts longer than a poll
    s.start_worker()
    s.start_api()
    # One finished job teaches the worker its speed, so estimates can be made.
    httpx.post(f"{s.base_url}/chat/completions", json={**BUSY, "max_tokens": 20}, timeout=120).raise_for_status()
    blocker = occupy(s, "unused")
    waiting = []
    for _ in range(3):
        waiting.append(httpx.Client(timeout=300))
    streams = [c.stream("POST", f"{s.base_url}/chat/completions",
                        json={**BUSY, "max_tokens": 100, "stream": True}) for c in waiting]
    responses = [st.__enter__() for st in streams]
    last = responses[-1]
    positions: list[tuple[int, float | None]] = []
    text = ""
    for sse in read_sse(last.iter_lines()):
        for event in sse.hearth_events():
            if isinstance(event, QueuedEvent):
                positions.append((event.position, event.eta_s))
                if len(positions) == 1:  # the last stream has seen where it starts: let the line move
                    cancel(s, "unused", blocker)
        if sse.data and sse.data != "[DONE]":
            choice = json.loads(sse.data)["choices"]
            text += (choice[0]["delta"].get("content") or "") if choice else ""
    for st in streams:
        st.__exit__(None, None, None)
    numbers = [p for p, _ in positions]
    assert numbers[0] == 3 and numbers[-1] == 1, positions
    assert all(a >= b for a, b in itertools.pairwise(numbers)), positions  # only ever moves up
    assert sorted(set(numbers), reverse=True) == [3, 2, 1], positions
    assert all(eta is not None and eta > 0 for _, eta in positions), positions
    assert text
