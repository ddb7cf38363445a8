"""The job-addressed event stream: late readers and resumed readers lose and repeat nothing."""

import threading

import httpx

from tests.sse import job_events, read_sse
from tests.stack import Stack

LONG = {"model": "any", "messages": [{"role": "user", "content": "Tell me a long story about a dragon."}],
        "max_tokens": 120, "stream": True, "seed": 3}


def tokens_of(events: list) -> list[str]:
    return [e.json()["text"] for e in events if e.event == "token"]


def start_stream(stack: Stack, body: dict) -> tuple[str, list[str], threading.Thread]:
    """Start a streaming chat in a thread; returns the job id and a list filling with content."""
    got: list[str] = []
    ready = threading.Event()
    job: dict[str, str] = {}

    def run() -> None:
        with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, timeout=120) as r:
            job["id"] = r.headers["x-job-id"]
            ready.set()
            for sse in read_sse(r):
                if sse.data and sse.data != "[DONE]":
                    delta = sse.json()["choices"][0]["delta"] if sse.json().get("choices") else {}
                    if delta.get("content"):
                        got.append(delta["content"])

    thread = threading.Thread(target=run)
    thread.start()
    assert ready.wait(30)
    return job["id"], got, thread


def test_reader_attaching_mid_generation_gets_every_token_once(stack: Stack) -> None:
    job_id, streamed, thread = start_stream(stack, LONG)
    deadline = threading.Event()
    while not streamed and not deadline.wait(0.01):
        pass  # attach once generation has visibly started
    late = job_events(stack.base_url, job_id)
    thread.join(120)
    assert not thread.is_alive()
    assert late[-1].event == "done"
    assert "".join(tokens_of(late)) == "".join(streamed)
    usage = late[-1].json()["usage"]
    assert usage["completion_tokens"] == 120
    assert sum(e.json()["tokens"] for e in late if e.event == "token") <= 120


def test_reader_after_the_end_and_resume_from_last_event_id(stack: Stack) -> None:
    job_id, streamed, thread = start_stream(stack, LONG)
    thread.join(120)
    assert not thread.is_alive()
    full = job_events(stack.base_url, job_id)
    assert [e.event for e in full][0] == "started" and full[-1].event == "done"
    assert "".join(tokens_of(full)) == "".join(streamed)
    ids = [e.id for e in full]
    assert all(ids) and len(set(ids)) == len(ids)
    # Resume after an event in the middle: exactly the remainder, in order.
    middle = len(full) // 2
    rest = job_events(stack.base_url, job_id, last_event_id=full[middle].id)
    assert [e.id for e in rest] == ids[middle + 1 :]
    assert "".join(tokens_of(full[: middle + 1]) + tokens_of(rest)) == "".join(streamed)


def test_unknown_job_is_404(stack: Stack) -> None:
    r = httpx.get(f"{stack.base_url}/jobs/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    r = httpx.get(f"{stack.base_url}/jobs/nope/events")
    assert r.status_code == 404
