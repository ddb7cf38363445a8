"""One worker, several models (`MODELS`): each request answered by the model it names, a model
loaded when a job asks for it (a `loading` event on the stream), the least recently used one
unloaded to stay within the memory budget, and jobs of two models taken in runs, not in turn."""

import json
from collections.abc import Callable
from itertools import groupby
from typing import Any

import httpx

from devstack import MODEL, Process, Stack, wait_for
from hearth.contract import METRICS_KEY
from hearth.metrics import ModelCounter, model_field
from tests.chats import BUSY, BackgroundChat, chat_body
from tests.test_metrics import scrape, value
from worker.settings import embedded_model_path
from worker.turns import Turns

MISTRAL = "mistral-tiny"
# SmolLM2 costs 105 MB at N_CTX=512 (its 94 MB file, 11 MB of KV cache), the tiny Mistral 21 MB:
# this budget holds one of them, never both.
ONE_ONLY_MB = "110"


def two_model_stack(make_stack: Callable[..., Stack], mistral_tiny: str, **env: str) -> tuple[Stack, Process]:
    s = make_stack(DEFAULT_MODEL="")
    s.start_api()
    worker = s.start_worker(MODELS=f"{embedded_model_path()},{mistral_tiny}", N_CTX="512", MODEL_MEMORY_BUDGET_MB=ONE_ONLY_MB, **env)
    return s, worker


def listed(s: Stack) -> dict[str, tuple[bool, int, int]]:
    return {m["id"]: (m["loaded"], m["workers"], m["context_length"])
            for m in httpx.get(f"{s.base_url}/models", timeout=10).json()["data"]}


def worker_lines(worker: Process, message: str) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, worker.log().splitlines()) if line.get("msg") == message]


def answered_by(worker: Process, job_id: str) -> str:
    (line,) = [line for line in worker_lines(worker, "job completed") if line.get("job_id") == job_id]
    return str(line["model"])


def ask(s: Stack, model: str) -> BackgroundChat:
    return BackgroundChat(s, chat_body("Say hi.", 3, model=model))


def test_each_request_is_answered_by_its_model_loaded_on_demand_within_the_budget(make_stack, mistral_tiny: str) -> None:
    s, worker = two_model_stack(make_stack, mistral_tiny)
    assert listed(s) == {MODEL: (True, 1, 512), MISTRAL: (False, 1, 512)}  # the first is loaded at start

    answer = httpx.post(f"{s.base_url}/chat/completions", timeout=120,
                        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert answer.status_code == 200 and answer.json()["model"] == MODEL
    assert answered_by(worker, answer.headers["x-job-id"]) == MODEL

    # Mistral is not in memory: its job is told while it loads, and SmolLM2 makes room.
    mistral = ask(s, MISTRAL).join()
    assert mistral.error is None and mistral.text
    kinds = [e["type"] for e in mistral.events]
    assert {"type": "loading", "model": MISTRAL} in mistral.events and kinds.index("started") < kinds.index("loading")
    assert answered_by(worker, str(mistral.job_id)) == MISTRAL
    wait_for(lambda: listed(s) == {MODEL: (False, 1, 512), MISTRAL: (True, 1, 512)}, 10, "/v1/models to show the swap")

    again = ask(s, MODEL).join()  # and back: SmolLM2 is loaded again, Mistral unloaded
    assert {"type": "loading", "model": MODEL} in again.events and answered_by(worker, str(again.job_id)) == MODEL
    samples = scrape(s)
    assert {(name, m): value(samples, f"hearth_model_{name}_total", model=m)
            for name in ("loads", "unloads") for m in (MODEL, MISTRAL)} == {
        ("loads", MODEL): 2, ("loads", MISTRAL): 1, ("unloads", MODEL): 1, ("unloads", MISTRAL): 1}
    assert value(samples, "hearth_model_load_seconds_total", model=MISTRAL) > 0
    assert [(line["model"], line["for_model"]) for line in worker_lines(worker, "model unloaded")] == [(MODEL, MISTRAL), (MISTRAL, MODEL)]


def test_two_models_asked_in_turn_are_served_in_runs_of_swap_after_jobs(make_stack, mistral_tiny: str) -> None:
    s, worker = two_model_stack(make_stack, mistral_tiny, SWAP_AFTER_JOBS="2")
    busy = BackgroundChat(s, {**BUSY, "model": MODEL, "max_tokens": 400, "stream": True})  # fits N_CTX=512
    busy.wait_for_text()  # SmolLM2's worker is busy: what follows waits, asked in turn
    waiting = [ask(s, model) for model in (MODEL, MISTRAL) * 3]
    busy.cancel()
    for chat in waiting:
        chat.join()
        assert chat.error is None
    order = [answered_by(worker, line["job_id"]) for line in worker_lines(worker, "job started") if line["job_id"] != busy.job_id]
    # Runs of 2 while the other model waits: SmolLM2 (in memory) first, then Mistral, then each
    # what is left. 3 swaps, where taking the jobs in the order asked would swap 5 times.
    assert order == [MODEL, MODEL, MISTRAL, MISTRAL, MODEL, MISTRAL]
    assert len(worker_lines(worker, "model loaded")) == 4  # at start, then per swap


def test_the_wait_for_a_model_no_worker_holds_counts_its_load(make_stack, mistral_tiny: str) -> None:
    s, _ = two_model_stack(make_stack, mistral_tiny)
    assert {m["id"]: m["load_s"] for m in httpx.get(f"{s.base_url}/models", timeout=10).json()["data"]}[MISTRAL] is None  # never loaded yet
    assert ask(s, MODEL).join().error is None  # the worker knows its speed now
    # As if Mistral were a big model on a slow disk: its two loads so far took 300 s.
    s.redis.hset(METRICS_KEY, mapping={model_field(ModelCounter.LOADS, MISTRAL): 2, model_field(ModelCounter.LOAD_SECONDS, MISTRAL): 300})
    load_s = {m["id"]: m["load_s"] for m in httpx.get(f"{s.base_url}/models", timeout=10).json()["data"]}
    assert load_s[MISTRAL] == 150 and load_s[MODEL] > 0  # what /v1/models says a chat page waits for it
    busy = BackgroundChat(s, {**BUSY, "model": MODEL, "max_tokens": 400, "stream": True})
    busy.wait_for_text()
    waiting = {model: ask(s, model) for model in (MISTRAL, MODEL)}
    def estimates(chat: BackgroundChat) -> list[float]:
        return [e["eta_s"] for e in chat.events if e["type"] == "queued" and e["eta_s"] is not None]

    for chat in waiting.values():
        chat.wait("an estimate", lambda: bool(estimates(chat)))  # noqa: B023 -- called before the loop moves on
    eta = {model: estimates(chat)[0] for model, chat in waiting.items()}
    busy.cancel()
    assert eta[MISTRAL] >= 150 > eta[MODEL]  # SmolLM2 is in memory: its wait is the busy chat's tokens alone
    for chat in waiting.values():
        assert chat.join().error is None


def first_with_jobs(turns: Turns, loaded: list[str], waiting: set[str]) -> str:
    return next(q for q in turns.order(loaded, waiting) if q in waiting)


def test_chats_go_before_batch_lines_whatever_their_model() -> None:
    turns = Turns(["a", "b"], swap_after=4)
    turns.taken("a")
    assert first_with_jobs(turns, ["a"], {"batch:a", "interactive:b"}) == "interactive:b"
    assert first_with_jobs(turns, ["a"], {"batch:a", "batch:b", "interactive:*"}) == "interactive:*"


def test_three_busy_models_in_room_for_two_each_get_runs_of_at_most_swap_after() -> None:
    turns, loaded, taken = Turns(["a", "b", "c"], swap_after=3), ["a"], []
    for _ in range(30):
        model = first_with_jobs(turns, loaded, {"interactive:a", "interactive:b", "interactive:c"}).partition(":")[2]
        turns.taken(model)
        loaded = [model, *(m for m in loaded if m != model)][:2]  # least recently used unloaded
        taken.append(model)
    runs = [len(list(run)) for _, run in groupby(taken)]
    assert set(taken) == {"a", "b", "c"} and max(runs) == 3 and len(runs) == 10  # none starves, none hogs
