"""Across workers: a conversation's next turn goes to the worker that holds its saved state
while that worker is free or soon will be, to another when waiting would cost more than the
prefill, and to another when the holder dies. Each worker has its own STATE_DIR, as on two
machines: only the holder can restore the history."""

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai

from bench.rig import end_tokens
from devstack import Process, Stack, wait_for
from hearth.contract import job_key, worker_key
from tests.test_metrics import scrape, value
from tests.test_states import QUESTION, SYSTEM
from worker.settings import embedded_model_path

LONG_ANSWER = 4000  # tokens: a minute of SmolLM2 on one thread, far longer than the history's prefill


def two_workers(make_stack: Callable[..., Stack], tmp_path: Path) -> tuple[Stack, list[Process]]:
    s = make_stack()
    workers = [s.start_worker(STATE_DIR=str(tmp_path / f"states-{i}")) for i in range(2)]
    s.start_api()
    return s, workers


def name(worker: Process) -> str:
    return worker.env["WORKER_NAME"]


def ask(s: Stack, messages: list[dict[str, str]], max_tokens: int = 8) -> tuple[str, str, int]:
    """The answer, the worker that gave it (its job's record) and the cached prompt tokens."""
    client = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0, timeout=120)
    done = client.chat.completions.create(model="any", messages=messages, max_tokens=max_tokens, temperature=0)
    assert done.usage is not None and done.usage.prompt_tokens_details is not None
    worker = s.redis.hget(job_key(done.id.removeprefix("chatcmpl-")), "worker")
    assert worker is not None
    return done.choices[0].message.content or "", worker.decode(), done.usage.prompt_tokens_details.cached_tokens or 0


def first_turn(s: Stack, workers: list[Process]) -> tuple[list[dict[str, str]], Process]:
    """A conversation's first turn, its history for the next, and the worker that holds it once
    that worker has measured its prefill speed (the api's estimate needs it)."""
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    answer, served, _ = ask(s, history)
    (holder,) = [w for w in workers if name(w) == served]
    wait_for(lambda: json.loads(s.redis.hget(worker_key(served), "prefill_tps") or b"0") > 0, 10, "the holder's prefill speed", holder)
    return [*history, {"role": "assistant", "content": answer}], holder


def turn(history: list[dict[str, str]], question: str) -> list[dict[str, str]]:
    return [*history, {"role": "user", "content": question}]


@contextmanager
def long_answer(s: Stack, messages: list[dict[str, str]]) -> Iterator[str]:
    """A chat generating LONG_ANSWER tokens while the block runs (its job id); leaving the
    block drops the stream, which cancels it."""
    body = {"model": "any", "messages": messages, "max_tokens": LONG_ANSWER, "stream": True,
            "logit_bias": {str(t): b for t, b in end_tokens(embedded_model_path()).items()}}
    with httpx.stream("POST", f"{s.base_url}/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        yield response.headers["x-job-id"]


def test_the_next_turn_goes_to_the_worker_holding_its_state_though_the_other_is_free(make_stack, tmp_path: Path) -> None:
    s, workers = two_workers(make_stack, tmp_path)
    history, holder = first_turn(s, workers)
    # Both idle: without routing, the worker that has waited longest (the other) would take it.
    _, served, cached = ask(s, turn(history, "And what should they eat?"))
    assert served == name(holder) and cached > 0
    assert any(line.get("msg") == "took a turn routed here by its saved state" for line in map(json.loads, holder.log().splitlines()))
    assert value(scrape(s), "hearth_state_routes_total", outcome="holder") == 1


def test_a_busy_holder_is_passed_over_when_waiting_would_cost_more_than_the_prefill(make_stack, tmp_path: Path) -> None:
    s, workers = two_workers(make_stack, tmp_path)
    history, holder = first_turn(s, workers)
    (other,) = [w for w in workers if w is not holder]
    # The conversation's own long answer keeps its holder busy (it is routed there too).
    with long_answer(s, turn(history, "Write a very long story about the coop.")) as long_job:
        wait_for(lambda: s.redis.hget(job_key(long_job), "worker") == name(holder).encode()
                 and json.loads(s.redis.hget(worker_key(name(holder)), "remaining") or b"0") > 0, 30, "the holder busy", holder)
        _, served, cached = ask(s, turn(history, "And what should they eat?"))
    assert served == name(other) and cached == 0  # evaluated from scratch, at once, on the free worker
    samples = scrape(s)
    assert value(samples, "hearth_state_routes_total", outcome="holder") == 1  # the long answer
    assert value(samples, "hearth_state_routes_total", outcome="fallback") == 1


def test_a_turn_waiting_for_a_dead_holder_is_answered_by_another_worker(make_stack, tmp_path: Path) -> None:
    s, workers = two_workers(make_stack, tmp_path)
    history, holder = first_turn(s, workers)
    (other,) = [w for w in workers if w is not holder]
    holder.stop(signal.SIGKILL)
    # Its heartbeat lives on for a moment: the turn may be routed to it, then moved to the
    # shared queue when the heartbeat expires; either way the other worker answers it.
    answer, served, _ = ask(s, turn(history, "And what should they eat?"))
    assert served == name(other) and answer
    samples = scrape(s)
    routed = value(samples, "hearth_state_routes_total", outcome="holder")
    assert value(samples, "hearth_state_routes_total", outcome="released") == routed
    assert routed + value(samples, "hearth_state_routes_total", outcome="fallback") == 1
