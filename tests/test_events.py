"""The job-addressed event stream: late readers, resumed readers and readers whose live
connection broke lose and repeat nothing; how events travel (log and pub/sub) and how often."""

import itertools
import json
import threading

import httpx

from devstack import Stack, wait_for
from hearth.contract import START_ID, decode_live, events_key, live_channel, stream_id
from hearth.sse import read_sse
from tests.sse import job_events

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
            for sse in read_sse(r.iter_lines()):
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
    wait_for(lambda: bool(streamed), 60, "the first token")  # attach once generation has visibly started
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
    assert next(e.event for e in full) == "started" and full[-1].event == "done"
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


def test_every_append_is_published_and_chains_to_the_one_before(stack: Stack) -> None:
    pubsub = stack.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(live_channel("*"))
    wait_for(lambda: stack.redis.pubsub_numpat() >= 1, 5, "the pattern subscription")  # subscribed from here on
    job_id, streamed, thread = start_stream(stack, {**LONG, "max_tokens": 40})
    thread.join(120)
    published: list[tuple[str, list]] = []

    def heard_the_end() -> bool:
        message = pubsub.get_message(timeout=1)
        if message is not None and message["channel"] == live_channel(job_id).encode():
            published.append(decode_live(message["data"]))
        return bool(published) and published[-1][1][-1][1].type == "done"

    wait_for(heard_the_end, 30, "the message that publishes the final event")
    pubsub.close()
    logged = [(entry_id.decode(), fields[b"event"].decode()) for entry_id, fields in stack.redis.xrange(events_key(job_id))]
    # Together the messages are the log, entry for entry, each naming the entry before it.
    assert [(i, e.model_dump_json()) for _, entries in published for i, e in entries] == logged
    assert [prev for prev, _ in published] == [START_ID] + [entries[-1][0] for _, entries in published[:-1]]
    assert "".join(e.text for _, entries in published for _, e in entries if e.type == "token") == "".join(streamed)


def subscribers(stack: Stack, job_id: str) -> int:
    return dict(stack.redis.pubsub_numsub(live_channel(job_id)))[live_channel(job_id).encode()]


def test_stream_survives_losing_its_live_connection(stack: Stack) -> None:
    job_id, streamed, thread = start_stream(stack, {**LONG, "max_tokens": 300})
    wait_for(lambda: bool(streamed), 60, "the first token")
    # Drop every pub/sub connection (the api's, and the worker's cancel listener) mid-answer.
    assert stack.redis.client_kill_filter(_type="pubsub") >= 1
    last = stack.redis.xrevrange(events_key(job_id), count=1)
    assert b'"done"' not in last[0][1][b"event"], "the answer ended before the connection was cut"
    wait_for(lambda: subscribers(stack, job_id) == 1, 3, "the api to resubscribe")
    thread.join(120)
    assert not thread.is_alive()
    logged = job_events(stack.base_url, job_id)
    assert logged[-1].event == "done" and logged[-1].json()["usage"]["completion_tokens"] == 300
    assert "".join(streamed) == "".join(tokens_of(logged))


def test_each_reader_subscribes_while_it_follows_and_not_after(stack: Stack) -> None:
    job_id, streamed, thread = start_stream(stack, {**LONG, "max_tokens": 200})
    second: list = []
    reader = threading.Thread(target=lambda: second.extend(job_events(stack.base_url, job_id)))
    reader.start()
    wait_for(lambda: subscribers(stack, job_id) == 2, 60, "both readers to subscribe")
    thread.join(120)
    reader.join(120)
    assert "".join(tokens_of(second)) == "".join(streamed)
    wait_for(lambda: subscribers(stack, job_id) == 0, 5, "the api to unsubscribe once nobody follows the job")


def test_tokens_after_the_first_are_written_at_most_once_per_interval(make_stack) -> None:
    interval_ms = 150
    s = make_stack(EVENT_INTERVAL_MS=str(interval_ms))
    s.start_worker()
    s.start_api()
    job_id, streamed, thread = start_stream(s, {**LONG, "max_tokens": 80})
    thread.join(120)
    assert not thread.is_alive()
    # The log itself: readers coalesce what they read in one go. Redis stamps ids in ms.
    log = [(stream_id(i.decode())[0], json.loads(f[b"event"])) for i, f in s.redis.xrange(events_key(job_id))]
    tokens = [(ms, e) for ms, e in log if e["type"] == "token"]
    final_write = log[-1][0]  # the tokens left when the answer ends go out with it, at once
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(tokens) if b != final_write]
    # Redis stamps each write when it arrives, so one late arrival shortens the gap after it;
    # over the whole answer the writes are still an interval apart (one interval of slack).
    assert len(gaps) >= 5 and sum(gaps) + interval_ms >= len(gaps) * (interval_ms - 10), gaps
    assert sum(e["tokens"] for _, e in tokens) == 80 and len(tokens) < 80  # several tokens per entry
    assert "".join(e["text"] for _, e in tokens) == "".join(streamed)
