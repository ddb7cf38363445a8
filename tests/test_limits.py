"""What one request may ask is bounded and cheap to refuse: an OpenAI-shaped 400/413 and
nothing queued; a huge but valid chat neither stalls the worker nor other people's chats."""

import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from devstack import Stack, serve, wait_for

HI = [{"role": "user", "content": "hi"}]
GOOD = {"model": "any", "messages": HI, "max_tokens": 2}


def post(stack: Stack, body: bytes | dict, timeout: float = 60) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{stack.base_url}/chat/completions", content=content,
                      headers={"content-type": "application/json"}, timeout=timeout)


def jobs(stack: Stack) -> int:
    return sum(1 for key in stack.redis.scan_iter("hearth:job:*") if key.count(b":") == 2)


def assert_refused(stack: Stack, r: httpx.Response, status: int, param: str | None) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param, error


# Raw JSON: json.dumps would write the surrogate as the same escape, but say it plainly.
SURROGATE = '"\\ud800"'


@pytest.mark.parametrize(("template", "param"), [
    ('{"messages": [{"role": "user", "content": %s}]}', "messages.0.content"),
    ('{"messages": [{"role": "user", "content": [{"type": "text", "text": %s}]}]}', "messages.0.content"),
    ('{"messages": [{"role": "user", "content": "hi"}], "stop": [%s]}', "stop"),
    ('{"messages": [{"role": "user", "content": "hi"}], "model": %s}', "model"),
    ('{"messages": [{"role": "user", "content": "hi"}], "user": %s}', "user"),
    ('{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {%s: 1}}', "logit_bias"),
])
def test_lone_surrogate_is_400_not_500(stack: Stack, template: str, param: str) -> None:
    before = jobs(stack)
    r = post(stack, (template % SURROGATE).encode())
    assert_refused(stack, r, 400, param)
    assert "surrogate" in r.json()["error"]["message"] or param == "logit_bias"
    assert jobs(stack) == before
    # A valid pair (an emoji written as two escapes) is text, and is served.
    assert post(stack, b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}], "max_tokens": 2}').status_code == 200


def test_lone_surrogate_in_sign_in_is_400_not_500(stack: Stack) -> None:
    r = httpx.post(f"{stack.base_url}/login", content=b'{"username": "a", "password": "\\udc00"}',
                   headers={"content-type": "application/json"})
    assert_refused(stack, r, 400, "password")


def test_logit_bias_outside_vocabulary_is_400(stack: Stack) -> None:
    n_vocab = json.loads(stack.redis.hget(next(stack.redis.scan_iter("hearth:worker:*")), "n_vocab"))
    assert n_vocab == 49152  # SmolLM2's
    before = jobs(stack)
    for token in (n_vocab, 10**6, 10**30):
        assert_refused(stack, post(stack, {**GOOD, "logit_bias": {str(token): 5}}), 400, "logit_bias")
    assert jobs(stack) == before
    assert post(stack, {**GOOD, "logit_bias": {str(n_vocab - 1): 5, "0": -100}}).status_code == 200


@pytest.mark.parametrize(("change", "param"), [
    ({"max_tokens": 10**30}, "max_tokens"),
    ({"max_completion_tokens": 2**31}, "max_completion_tokens"),
    ({"seed": 2**63}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": "x" * 257}, "stop"),
    ({"logit_bias": {"1": 101}}, "logit_bias.1"),
    ({"logit_bias": {"²": 1}}, "logit_bias"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
    ({"top_p": 0}, "top_p"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"messages": HI * 2049}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 262_145}]}, "messages.0.content"),
    ({"model": "m" * 257}, "model"),
])
def test_request_over_a_limit_is_400_naming_it(stack: Stack, change: dict, param: str) -> None:
    before = jobs(stack)
    assert_refused(stack, post(stack, {**GOOD, **change}), 400, param)
    assert jobs(stack) == before


@pytest.mark.parametrize("raw", [b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
                                 b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}'])
def test_non_finite_numbers_are_400(stack: Stack, raw: bytes) -> None:
    assert_refused(stack, post(stack, raw), 400, "temperature")


def test_extreme_but_valid_seeds_are_served(stack: Stack) -> None:
    for seed in (-(2**63), 2**63 - 1, -1):
        r = post(stack, {**GOOD, "seed": seed})
        assert r.status_code == 200, r.text


def test_deeply_nested_json_is_400(stack: Stack) -> None:
    deep = b'{"messages": [{"role": "user", "content": "hi"}], "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = post(stack, deep)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413_before_it_is_read(stack: Stack) -> None:
    big = json.dumps({**GOOD, "pad": "x" * 1_100_000}).encode()
    r = post(stack, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while reading
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = httpx.post(f"{stack.base_url}/chat/completions", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert "X-Request-ID" in r.headers
    assert post(stack, GOOD).status_code == 200  # the api is fine afterwards


# --- Huge but valid chats ---------------------------------------------------------------

TINY_MESSAGES = 20_000


@pytest.fixture(scope="module")
def roomy(redis_server, log_dir) -> Iterator[Stack]:
    """Limits raised so that 20,000 messages are valid; a small window keeps evaluating the
    trimmed prompt short, so what is timed is the handling of the chat's size."""
    yield from serve(redis_server, log_dir, MAX_MESSAGES="50000", N_CTX="1024")


def tiny_chat() -> dict:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(TINY_MESSAGES - 1)]
    return {"model": "any", "messages": [*messages, {"role": "user", "content": "last"}], "max_tokens": 4}


def span_s(stack: Stack, job_id: str, first: str, last: str) -> float:
    """Seconds between a job's first `first` event and its first `last` event, from their
    stream ids (Redis's clock, in ms)."""
    entries = stack.redis.xrange(f"hearth:job:{job_id}:events")
    types = [(entry_id.decode(), json.loads(fields[b"event"])["type"]) for entry_id, fields in entries]
    at = {kind: int(next(i for i, t in types if t == kind).split("-")[0]) for kind in (first, last)}
    return (at[last] - at[first]) / 1000


def story(stack: Stack, job_ids: list[str], first_token: threading.Event | None = None) -> None:
    body = {"model": "any", "messages": [{"role": "user", "content": "Tell me a story about a fox."}],
            "max_tokens": 48, "seed": 7, "stream": True, "logit_bias": {"0": -100, "2": -100}}
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, timeout=300) as r:
        job_ids.append(r.headers["x-job-id"])
        for line in r.iter_lines():
            if (first_token is not None and line.startswith("data: {")
                    and json.loads(line[len("data: "):])["choices"][0]["delta"].get("content")):
                first_token.set()


def test_many_tiny_messages_do_not_stall_others(roomy: Stack) -> None:
    # Baseline: the same story, alone, on this machine now.
    alone: list[str] = []
    story(roomy, alone)
    baseline = span_s(roomy, alone[0], "started", "done")

    # The story again; once it generates, someone sends 20,000 messages.
    mine: list[str] = []
    generating = threading.Event()
    reader = threading.Thread(target=story, args=(roomy, mine, generating))
    reader.start()
    assert generating.wait(120), "the story never streamed a token"
    huge = post(roomy, tiny_chat(), timeout=300)
    reader.join(300)
    assert huge.status_code == 200, huge.text
    during = span_s(roomy, mine[0], "started", "done")
    assert during < 2 * baseline + 1.5, (during, baseline)

    # Counting and trimming the huge chat (from the job's start to its `context_trimmed`)
    # took well under the time of evaluating a window-sized prompt, on this machine now.
    # (When every trimming step re-counted the chat it took about 0.7 of it; now about 0.1:
    # one tokenizer call per message remains.)
    assert huge.json()["context_trimmed"]["messages"] > TINY_MESSAGES - 1000
    planning = span_s(roomy, huge.headers["x-job-id"], "started", "context_trimmed")
    window = post(roomy, {"model": "any", "messages": [{"role": "user", "content": "word " * 900}], "max_tokens": 4})
    assert window.status_code == 200
    evaluating = span_s(roomy, window.headers["x-job-id"], "started", "done")
    assert planning < evaluating / 3, (planning, evaluating)


def test_too_many_messages_are_refused_fast(stack: Stack) -> None:
    before = jobs(stack)
    r = post(stack, tiny_chat())
    assert_refused(stack, r, 400, "messages")
    assert "2048" in r.json()["error"]["message"]
    assert jobs(stack) == before
    wait_for(lambda: post(stack, GOOD).status_code == 200, 30, "a normal chat right after")


def test_resume_id_too_large_for_redis_is_400(stack: Stack) -> None:
    job_id = post(stack, GOOD).headers["x-job-id"]
    for bad in ("9" * 5000 + "-0", "99999999999999999999-0"):
        r = httpx.get(f"{stack.base_url}/jobs/{job_id}/events", headers={"Last-Event-ID": bad}, timeout=30)
        assert r.status_code == 400, r.text
        r = httpx.get(f"{stack.base_url}/jobs/{job_id}/events", params={"after": bad}, timeout=30)
        assert r.status_code == 400, r.text
