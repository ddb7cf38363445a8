"""Logs: JSON lines that let one job be followed through api and worker, never the messages
unless LOG_PROMPTS=1, and an unexpected error logged once, answered with its request id."""

import asyncio
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from api.middleware import RequestContextMiddleware
from devstack import Process, Stack
from hearth.logs import ContextFilter, JsonFormatter, TextFormatter, log_context
from tests.chats import NO_END, BackgroundChat, chat_body

SECRET = "periwinkle-quokka-5318"  # only ever in the messages


def json_lines(proc: Process) -> list[dict[str, Any]]:
    lines = []
    for raw in proc.log().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            raise AssertionError(f"{proc.name} wrote a line that is not JSON: {raw!r}") from None
    return lines


def chat(stack: Stack, content: str, request_id: str) -> tuple[str, str]:
    """A non-streamed chat with the official client: (job id, answer). The end tokens are
    banned, so the answer is long enough to be looked for in the logs."""
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=300)
    raw = client.chat.completions.with_raw_response.create(
        model="any", messages=[{"role": "user", "content": content}], max_tokens=24, logit_bias=NO_END,
        extra_headers={"X-Request-ID": request_id})
    assert raw.headers["x-request-id"] == request_id
    answer = raw.parse().choices[0].message.content or ""
    return raw.headers["x-job-id"], answer


def test_every_line_of_a_job_carries_its_id_in_api_and_worker_and_no_message_text(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(N_CTX="512")
    stack.start_api()
    # Queued while no worker is up (so no pre-queue size check): the worker finds it too long
    # for its window, and the job fails inside the worker, where RQ logs the failure.
    too_long = BackgroundChat(stack, chat_body(f"{SECRET} " + "word " * 700, 16))
    stack.start_worker()
    assert too_long.join().error is not None and too_long.error["code"] == "context_length_exceeded"
    job_id, answer = chat(stack, f"Say hello to {SECRET}.", "test-request-1")
    stack.stop()  # every line written

    api, worker = json_lines(stack.api), json_lines(stack.workers[0])
    for job in (too_long.job_id, job_id):
        for process, lines in (("api", api), ("worker", worker)):
            assert any(line.get("job_id") == job for line in lines), f"no {process} line names job {job}"
            mentioning = [line for line in lines if job in json.dumps(line)]
            assert all(line.get("job_id") == job for line in mentioning), f"a {process} line mentions job {job} without its job_id"
        assert all(line.get("user") == "local" for line in worker if line.get("job_id") == job and line["logger"].startswith("worker"))
    request = [line for line in api if line.get("request_id") == "test-request-1"]
    assert {line["msg"] for line in request} >= {"job queued", "POST /v1/chat/completions 200"}
    assert all(line.get("job_id") == job_id and line.get("user") == "local" for line in request)
    assert all({"ts", "level", "process", "pid", "logger", "msg"} <= line.keys() for line in api + worker)
    # The failure is logged once, as an error with its stack trace.
    errors = [line for line in worker if line.get("job_id") == too_long.job_id and line["level"] == "error"]
    assert len(errors) == 1 and "Traceback" in json.dumps(errors[0])
    everything = stack.api.log() + stack.workers[0].log()
    assert SECRET not in everything
    assert len(answer) >= 40 and answer not in everything


def test_log_prompts_puts_the_messages_in_the_worker_log(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(LOG_PROMPTS="1")
    stack.start_worker()
    stack.start_api()
    job_id, answer = chat(stack, f"Say hello to {SECRET}.", "test-request-2")
    stack.stop()
    worker = json_lines(stack.workers[0])
    prompts = [line for line in worker if line["msg"] == "job prompt"]
    assert len(prompts) == 1 and prompts[0]["job_id"] == job_id and SECRET in json.dumps(prompts[0])
    answers = [line for line in worker if line["msg"] == "job answer"]
    assert len(answers) == 1 and answers[0]["text"] == answer


def test_unexpected_error_is_logged_once_and_answered_with_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not reach the client")

    async def call(request_id: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get("/boom", headers={"X-Request-ID": request_id})

    caplog.handler.addFilter(ContextFilter(log_prompts=False))  # as setup_logging installs it
    with caplog.at_level(logging.INFO):
        given = asyncio.run(call("caller-chosen-id"))
        made = asyncio.run(call("not a valid id!"))
    assert given.status_code == 500 and given.headers["x-request-id"] == "caller-chosen-id"
    assert given.json()["error"] == {"message": "Internal error (request id caller-chosen-id).", "type": "server_error",
                                     "param": None, "code": "internal_error"}
    assert made.headers["x-request-id"] != "not a valid id!" and made.headers["x-request-id"] in made.json()["error"]["message"]
    traced = [r for r in caplog.records if r.exc_info]
    assert len(traced) == 2 and {vars(r)["request_id"] for r in traced} == {"caller-chosen-id", made.headers["x-request-id"]}
    assert "internal detail" not in given.text + made.text


def _formatted(formatter: logging.Formatter, log_prompts: bool = False, logger: str = "hearth.test", **extra: Any) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter(log_prompts))
    log = logging.getLogger(logger)
    log.addHandler(handler)
    log.propagate = False
    try:
        with log_context(request_id="r1", job_id="j1", user="ann"):
            log.warning("something %s", "happened", extra=extra)
    finally:
        log.removeHandler(handler)
    return stream.getvalue()


def test_bound_context_reaches_json_and_text_lines() -> None:
    line = json.loads(_formatted(JsonFormatter("api")))
    assert (line["request_id"], line["job_id"], line["user"], line["msg"]) == ("r1", "j1", "ann", "something happened")
    assert _formatted(TextFormatter("api")).rstrip().endswith("something happened [request_id=r1 job_id=j1 user=ann]")


def test_rq_copy_of_a_jobs_arguments_is_dropped_unless_prompts_are_logged() -> None:
    args = {"arguments": [{"messages": [{"role": "user", "content": SECRET}]}]}
    assert SECRET not in _formatted(JsonFormatter("worker"), logger="rq.worker", **args)
    assert SECRET in _formatted(JsonFormatter("worker"), log_prompts=True, logger="rq.worker", **args)
