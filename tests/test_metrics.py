"""`GET /metrics` after a known set of chats on a private stack: each counter moved by exactly
the right amount, and the histograms counted exactly the jobs they should."""

from collections.abc import Callable

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from devstack import BATCH, INTERACTIVE, Stack, wait_for
from tests.chats import BackgroundChat, chat_body
from tests.sse import job_events

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
HISTOGRAMS = ("hearth_queue_wait_seconds", "hearth_time_to_first_token_seconds", "hearth_generation_tokens_per_second")


def scrape(stack: Stack) -> Samples:
    r = httpx.get(f"http://127.0.0.1:{stack.api_port}/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_histograms_after_a_completed_a_cancelled_and_a_rejected_chat(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(MAX_WAITING_PER_USER="1")  # a second waiting chat of one user gets 429
    stack.start_worker()
    stack.start_api()
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=300)
    worker = stack.workers[0].env["WORKER_NAME"]
    before = scrape(stack)
    assert value(before, "hearth_workers", state="idle") == 1 and value(before, "hearth_worker_busy", worker=worker) == 0

    # L runs (until it is cancelled, below): meanwhile B waits, and C is refused because B is
    # its user's one waiting job. B is then cancelled while it waits, so it never starts.
    long = BackgroundChat(stack, chat_body("Tell me a very long story about a lighthouse.", 2000))
    long.wait_for_text()
    b = BackgroundChat(stack, chat_body("Name a colour.", 8))
    b.wait_queued()
    during = scrape(stack)
    assert value(during, "hearth_queue_depth", queue=INTERACTIVE) == 1
    assert value(during, "hearth_requests_deferred") == 1
    wait_for(lambda: value(scrape(stack), "hearth_requests_processing") == 1, 30, "the heartbeat to say busy")
    assert value(scrape(stack), "hearth_worker_busy", worker=worker) == 1
    try:
        client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hello?"}], max_tokens=4)
        raise AssertionError("a chat of a user who already has a job waiting must be refused")
    except openai.RateLimitError:
        pass
    b.cancel()
    assert b.join().error is not None and b.error["code"] == "cancelled"
    assert not long.error and long.usage is None, "the long chat must still be running"
    # L is cancelled while it runs, after sending some text; then A runs to completion.
    long.cancel()
    assert long.join().error is not None and long.error["code"] == "cancelled"
    long_tokens = sum(e.json()["tokens"] for e in job_events(stack.base_url, long.job_id) if e.event == "token")
    assert long_tokens >= 1
    a = BackgroundChat(stack, chat_body("Count from one to ten.", 24)).join()
    assert a.error is None and a.usage is not None

    wait_for(lambda: value(scrape(stack), "hearth_requests_processing") == 0, 30, "the worker to be idle again")
    after = scrape(stack)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert {o: moved("hearth_jobs_total", outcome=o) for o in ("completed", "cancelled", "failed", "timed_out", "rejected")} == {
        "completed": 1, "cancelled": 2, "failed": 0, "timed_out": 0, "rejected": 1}
    usage = a.usage
    cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    assert moved("hearth_prompt_tokens_total", kind="evaluated") == usage["prompt_tokens"] - cached
    assert moved("hearth_prompt_tokens_total", kind="cached") == cached
    assert moved("hearth_tokens_predicted_total") == usage["completion_tokens"] + long_tokens == 24 + long_tokens
    assert moved("hearth_user_tokens_total", user="local", kind="prompt") == usage["prompt_tokens"]
    assert moved("hearth_user_tokens_total", user="local", kind="completion") == 24 + long_tokens
    # L and A started and sent text; B never started; only A completed (its speed).
    expected = {"hearth_queue_wait_seconds": 2, "hearth_time_to_first_token_seconds": 2, "hearth_generation_tokens_per_second": 1}
    for name in HISTOGRAMS:
        assert moved(f"{name}_count") == expected[name], name
        assert moved(f"{name}_bucket", le="+Inf") == expected[name], name
        assert moved(f"{name}_sum") > 0 or name == "hearth_queue_wait_seconds", name
        buckets = sorted(((float(dict(labels)["le"]), v) for (n, labels), v in after.items() if n == f"{name}_bucket"))
        assert [v for _, v in buckets] == sorted(v for _, v in buckets), f"{name}'s buckets are not cumulative"
    assert value(after, "hearth_queue_depth", queue=INTERACTIVE) == 0
    assert value(after, "hearth_queue_depth", queue=BATCH) == 0
    assert value(after, "hearth_workers", state="idle") == 1 and value(after, "hearth_workers", state="busy") == 0

    model = httpx.get(f"{stack.base_url}/models", timeout=30).json()["data"][0]
    assert value(after, "hearth_model_info", model=model["id"], n_ctx=str(model["context_length"])) == 1


def test_metrics_need_no_worker_and_list_every_family(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.start_api()  # no worker: the scrape still answers, with zero workers and empty queues
    samples = scrape(stack)
    names = {name for name, _ in samples}
    assert {"hearth_queue_depth", "hearth_requests_processing", "hearth_requests_deferred", "hearth_workers",
            "hearth_jobs_total", "hearth_prompt_tokens_total", "hearth_tokens_predicted_total"} <= names
    assert {f"{h}_count" for h in HISTOGRAMS} <= names
    assert value(samples, "hearth_workers", state="idle") == value(samples, "hearth_workers", state="busy") == 0
    assert value(samples, "hearth_jobs_total", outcome="rejected") == 0
