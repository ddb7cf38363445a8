"""Bad input and missing services get OpenAI-shaped errors with the right status, never a traceback."""

import json

import httpx
import openai
import pytest

from devstack import Stack, free_port
from hearth.contract import ANY_MODEL
from hearth.sse import read_sse

GOOD = {"model": "any", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    assert error["message"] and "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**GOOD, "messages": []}, "messages"),
        ({**GOOD, "messages": "hello"}, "messages"),
        ({**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({**GOOD, "messages": [{"content": "hi"}]}, "messages.0.role"),
        ({**GOOD, "max_tokens": 0}, "max_tokens"),
        ({**GOOD, "max_tokens": -5}, "max_tokens"),
        ({**GOOD, "max_tokens": "many"}, "max_tokens"),
        ({**GOOD, "temperature": 7}, "temperature"),
        ({**GOOD, "n": 3}, "n"),
        ({**GOOD, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({**GOOD, "stream": "perhaps"}, "stream"),
    ],
)
def test_invalid_request_is_400_naming_the_field(stack: Stack, body: dict, param: str) -> None:
    error = assert_openai_error(httpx.post(f"{stack.base_url}/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_malformed_json_is_400(stack: Stack) -> None:
    r = httpx.post(f"{stack.base_url}/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert "JSON" in assert_openai_error(r, 400)["message"]


def test_unknown_fields_are_ignored(stack: Stack) -> None:
    r = httpx.post(f"{stack.base_url}/chat/completions", json={**GOOD, "frobnicate": True, "parallel_tool_calls": False}, timeout=60)
    assert r.status_code == 200, r.text


def test_openai_client_raises_bad_request(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="any", messages=[], max_tokens=3)


def test_redis_unreachable_is_503(make_stack) -> None:
    s = make_stack(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    s.start_api()
    r = httpx.post(f"{s.base_url}/chat/completions", json=GOOD, timeout=30)
    assert "Redis" in assert_openai_error(r, 503)["message"]
    ready = httpx.get(f"http://127.0.0.1:{s.api_port}/readyz", timeout=30)
    assert ready.status_code == 503 and "Redis" in ready.json()["reason"]
    assert httpx.get(f"http://127.0.0.1:{s.api_port}/healthz").status_code == 200


def test_without_a_worker_the_job_waits_and_readyz_says_why(make_stack) -> None:
    s = make_stack(DEFAULT_MODEL="")  # no model named anywhere: the first worker of any model answers
    s.start_api()
    ready = httpx.get(f"http://127.0.0.1:{s.api_port}/readyz")
    assert ready.status_code == 503 and "No worker" in ready.json()["reason"]
    with httpx.stream("POST", f"{s.base_url}/chat/completions", json={**GOOD, "stream": True}, timeout=120) as r:
        job_id = r.headers["x-job-id"]
        events = read_sse(r.iter_lines())
        # The stream tells its client where it waits (an SSE comment the openai client skips).
        waiting = next(e for e in events if any('"type":"queued"' in c for c in e.comments))
        assert '"position":1' in waiting.comments[0]
        assert httpx.get(f"{s.base_url}/jobs/{job_id}").json()["status"] == "queued"
        assert s.redis.lpos(f"rq:queue:interactive:{ANY_MODEL}", job_id) == 0  # the first worker's to take
        s.start_worker()  # the waiting job is served once a worker arrives
        chunks = [json.loads(e.data) for e in events if e.data and e.data != "[DONE]"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert httpx.get(f"{s.base_url}/jobs/{job_id}").json()["status"] == "completed"
    assert httpx.get(f"http://127.0.0.1:{s.api_port}/readyz").status_code == 200


def test_method_not_allowed_names_every_allowed_method(stack: Stack) -> None:
    """A 405 lost Starlette's `Allow` header, and for a path served by two routes (GET and POST
    /v1/conversations) Starlette's names only the first (found by test_fuzz)."""
    r = httpx.request("TRACE", f"{stack.base_url}/conversations")
    assert_openai_error(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
    assert httpx.put(f"{stack.base_url}/me").headers["allow"] == "GET"
