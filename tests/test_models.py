"""Routing by `model`: /v1/models, aliases, the default model, 404 for unknown names, and
requests made while no worker (or no worker of their model) is up."""

import json
from typing import Any

import httpx
import openai
import pytest

from devstack import MODEL, Stack, wait_for
from hearth.sse import read_sse
from tests.chats import BackgroundChat

ASK = [{"role": "user", "content": "Say hi."}]


def ready(s: Stack) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{s.api_port}/readyz", timeout=10)


def models(s: Stack) -> list[dict[str, Any]]:
    return httpx.get(f"{s.base_url}/models", timeout=10).json()["data"]


def chat(s: Stack, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{s.base_url}/chat/completions", json={"model": model, "messages": ASK, "max_tokens": 4, **extra}, timeout=120)


def job_status(s: Stack, job_id: str) -> str:
    return str(httpx.get(f"{s.base_url}/jobs/{job_id}", timeout=10).json()["status"])


def queued_anywhere(s: Stack) -> int:
    return sum(int(s.redis.llen(key)) for key in s.redis.scan_iter("rq:queue:*"))


def test_models_lists_each_served_model_with_its_window_and_workers(stack: Stack) -> None:
    (model,) = models(stack)
    assert model["id"] == MODEL and model["context_length"] == 8192
    assert model["loaded"] is True and model["workers"] == 1
    assert ready(stack).json()["models"] == [MODEL]
    status = httpx.get(f"{stack.base_url}/status", timeout=10).json()
    (worker,) = status["workers"]
    assert worker["models"] == [MODEL] and worker["threads"] == 1 and worker["gpu_layers"] == 0
    assert worker["host"] and worker["state"] in ("idle", "busy")


def test_model_selects_by_name_alias_or_none_and_unknown_is_404_before_queueing(make_stack) -> None:
    s = make_stack(DEFAULT_MODEL="", MODEL_ALIASES=f"gpt-4o-mini={MODEL}, hearth = {MODEL}")
    s.start_worker()
    s.start_api()
    for name in (MODEL, "gpt-4o-mini", "hearth", ""):
        answer = chat(s, name)
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json()["model"] == MODEL  # the model that answered, as OpenAI names the resolved one

    refused = chat(s, "gpt-5", stream=True)
    assert refused.status_code == 404
    error = refused.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert MODEL in error["message"] and "gpt-4o-mini" in error["message"]
    jobs = [k for k in s.redis.scan_iter("hearth:job:*") if k.count(b":") == 2]
    assert queued_anywhere(s) == 0 and len(jobs) == 4  # the 4 answered jobs only
    client = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5", messages=ASK)

    # A batch line naming an unknown model goes to the error file; the others run.
    lines = [{"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": name, "messages": ASK, "max_tokens": 4}} for cid, name in (("ok", "hearth"), ("bad", "gpt-5"))]
    uploaded = client.files.create(file=("l.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode()), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: client.batches.retrieve(batch.id).status == "completed", 120, "the batch")
    done = client.batches.retrieve(batch.id)
    (output,) = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    (error_line,) = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert output["custom_id"] == "ok" and output["response"]["body"]["model"] == MODEL
    assert error_line["custom_id"] == "bad" and error_line["error"]["code"] == "model_not_found"


def test_default_model_answers_other_names_only_when_set(make_stack) -> None:
    s = make_stack(DEFAULT_MODEL=MODEL)
    s.start_worker()
    s.start_api()
    answer = chat(s, "gpt-5")
    assert answer.status_code == 200 and answer.json()["model"] == MODEL


def test_requests_wait_for_the_first_worker_then_for_their_models_worker(make_stack) -> None:
    s = make_stack(DEFAULT_MODEL="")
    s.start_api()
    # No worker has ever been up: no name can be checked, so the request waits in the `*`
    # queues for the first worker of any model.
    first = BackgroundChat(s, {"model": "whatever", "messages": ASK, "max_tokens": 4, "stream": True})
    job_id = str(first.job_id)
    assert httpx.get(f"{s.base_url}/jobs/{job_id}", timeout=10).json()["queue"] == "interactive:*"
    assert ready(s).json() == {"status": "unavailable", "reason": ready(s).json()["reason"], "models": [], "waiting": []}
    worker = s.start_worker()
    assert first.join(60).text  # served once a worker arrived
    assert job_status(s, job_id) == "completed"
    assert [m["id"] for m in models(s)] == [MODEL]

    # Its worker gone, the model is remembered: a request for it waits for the next worker,
    # while an unknown name is 404 at once.
    worker.stop()
    wait_for(lambda: ready(s).status_code == 503, 10, "readyz to notice the worker left")
    assert ready(s).json()["waiting"] == [MODEL] and models(s) == []
    assert chat(s, "whatever").status_code == 404
    waiting = BackgroundChat(s, {"model": MODEL, "messages": ASK, "max_tokens": 4, "stream": True})
    job_id = str(waiting.job_id)
    assert httpx.get(f"{s.base_url}/jobs/{job_id}", timeout=10).json()["queue"] == f"interactive:{MODEL}"
    s.start_worker()
    assert waiting.join(60).text and job_status(s, job_id) == "completed"  # the model's next worker served it
    assert ready(s).json()["models"] == [MODEL] and models(s)[0]["workers"] == 1


def first_queued_event(s: Stack, job_id: str) -> dict[str, Any]:
    with httpx.stream("GET", f"{s.base_url}/jobs/{job_id}/events", timeout=30) as r:
        return next(sse.json() for sse in read_sse(r.iter_lines()) if sse.event == "queued")


def test_each_model_answers_its_own_and_waits_estimates_and_caps_are_per_model(make_stack, mistral_tiny: str) -> None:
    s = make_stack(DEFAULT_MODEL="", MAX_QUEUED="1")
    s.start_api()
    mistral = s.start_worker(MODEL_PATH=mistral_tiny, N_CTX="512")
    smol = s.start_worker()
    assert {m["id"]: m["context_length"] for m in models(s)} == {MODEL: 8192, "mistral-tiny": 512}
    for name, worker in ((MODEL, smol), ("mistral-tiny", mistral)):
        answer = chat(s, name)
        assert answer.status_code == 200 and answer.json()["model"] == name
        job_id = answer.headers["x-job-id"]
        assert job_id in worker.log() and all(job_id not in w.log() for w in s.workers if w is not worker)
    smol_name = smol.env["WORKER_NAME"]
    assert float(s.redis.hget(f"hearth:worker:{smol_name}", "tps") or 0) > 0  # SmolLM2's worker knows its speed

    mistral.stop()
    wait_for(lambda: [m["id"] for m in models(s)] == [MODEL], 10, "mistral's worker to leave /v1/models")
    waiting = BackgroundChat(s, {"model": "mistral-tiny", "messages": ASK, "max_tokens": 4, "stream": True})
    # Only a worker that serves the model says how long it waits: none is up, so no estimate,
    # however fast SmolLM2's worker is.
    assert first_queued_event(s, str(waiting.job_id)) == {"type": "queued", "position": 1, "eta_s": None}
    # Caps count each model's queue: mistral's is full (MAX_QUEUED=1), SmolLM2's is not.
    assert chat(s, "mistral-tiny").status_code == 429
    assert chat(s, MODEL).status_code == 200
    s.start_worker(MODEL_PATH=mistral_tiny, N_CTX="512")
    assert waiting.join(60).text and job_status(s, str(waiting.job_id)) == "completed"
