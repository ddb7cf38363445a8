"""Usage and quotas: each job counted once per person, model and day (Redis's day, in the
operator's timezone); limits enforced at admission, atomically, with 429 `quota_exceeded`;
a batch pauses at its owner's quota instead of failing; a day's quota resets at midnight."""

import threading
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
import redis

from devstack import MODEL, Stack, add_user, wait_for
from tests.batches import request_line, run_batch, wait_status
from tests.chats import BUSY
from tests.test_accounts import api, cli

HELLO = [{"role": "user", "content": "Say hi."}]


def chat(stack: Stack, key: str, max_tokens: int = 4) -> httpx.Response:
    return api(stack, key).post("/chat/completions", json={"model": "any", "messages": HELLO, "max_tokens": max_tokens})


def test_usage_counts_each_job_once_per_person_and_model(secured: Stack, boss: str) -> None:
    uma, vic = add_user(secured, "uma"), add_user(secured, "vic")
    usages = []
    for _ in range(2):
        r = chat(secured, uma)
        assert r.status_code == 200, r.text
        usages.append(r.json()["usage"])
    prompt, completion = (sum(u[k] for u in usages) for k in ("prompt_tokens", "completion_tokens"))
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    mine = api(secured, uma).get("/usage").json()
    expected = {"requests": 2, "prompt_tokens": prompt, "completion_tokens": completion, "tokens": prompt - cached + completion}
    if cached:
        expected["cached_tokens"] = cached
    assert mine["today"] == {"total": expected, MODEL: expected}
    assert mine["week"] == mine["today"] and mine["month"] == mine["today"]
    assert mine["user"] == "uma" and mine["timezone"] == "UTC" and mine["left"]["tokens_today"] is None
    # One's own only; an admin may look at anyone's.
    with api(secured, vic) as http:
        assert http.get("/usage").json()["today"] == {}
        assert http.get("/usage", params={"user": "uma"}).status_code == 403
    with api(secured, boss) as http:
        assert http.get("/usage", params={"user": "uma"}).json()["today"] == mine["today"]
        assert http.get("/usage", params={"user": "nobody"}).status_code == 404
        row = next(p for p in http.get("/admin/users").json()["data"] if p["name"] == "uma")
        assert row["usage_today"] == expected


def test_over_quota_is_429_quota_exceeded_saying_which_limit_and_when_it_resets(secured: Stack, boss: str) -> None:
    wes = add_user(secured, "wes")
    with api(secured, boss) as http:
        assert http.put("/admin/users/wes/quota", json={"tokens_per_day": 1}).status_code == 200
    assert chat(secured, wes).status_code == 200  # admitted while something is left; it finishes
    for path, body in (("/chat/completions", {"model": "any", "messages": HELLO, "max_tokens": 4}),
                       ("/responses", {"model": "any", "input": "Say hi.", "max_output_tokens": 4})):
        r = api(secured, wes).post(path, json=body)
        assert r.status_code == 429, r.text
        error = r.json()["error"]
        assert error["code"] == "quota_exceeded" and "tokens_per_day" in error["message"] and "resets at" in error["message"]
        now = datetime.fromtimestamp(secured.redis.time()[0], ZoneInfo("UTC"))
        to_midnight = (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), ZoneInfo("UTC")) - now).total_seconds()
        assert abs(int(r.headers["Retry-After"]) - to_midnight) <= 5
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=secured.base_url, api_key=wes, max_retries=0).chat.completions.create(model="any", messages=HELLO, max_tokens=2)
    assert api(secured, wes).get("/usage").json()["left"]["tokens_today"] == 0
    # The person's own limits cleared, the default's (none) apply again.
    assert cli(secured, "quota", "wes", "--clear").returncode == 0
    assert chat(secured, wes).status_code == 200


def test_default_quota_applies_to_whoever_has_none(secured: Stack, boss: str) -> None:
    yul, zed = add_user(secured, "yul"), add_user(secured, "zed")
    assert cli(secured, "quota", "--default", "--tokens-per-month", "1").returncode == 0
    assert cli(secured, "quota", "zed", "--tokens-per-month", "1000000").returncode == 0
    try:
        assert chat(secured, yul).status_code == 200
        r = chat(secured, yul)
        assert r.status_code == 429 and "tokens_per_month" in r.json()["error"]["message"]
        assert chat(secured, zed).status_code == 200 and chat(secured, zed).status_code == 200
        quotas = api(secured, boss).get("/admin/quotas").json()
        assert quotas["default"]["tokens_per_month"] == 1 and quotas["people"]["zed"]["tokens_per_month"] == 1000000
        assert "tokens_per_month=1000000" in cli(secured, "quota", "zed").stdout
    finally:
        assert cli(secured, "quota", "--default", "--clear").returncode == 0


def race(stack: Stack, key: str, n: int) -> list[int]:
    """`n` long streamed chats sent at the same instant: their statuses, once all have one."""
    statuses: list[int] = []
    lock, everyone_answered = threading.Lock(), threading.Barrier(n + 1)

    def ask(start: threading.Barrier) -> None:
        with httpx.Client(timeout=60) as http:
            start.wait()
            with http.stream("POST", f"{stack.base_url}/chat/completions", json={**BUSY, "stream": True},
                             headers={"Authorization": f"Bearer {key}"}) as r:
                with lock:
                    statuses.append(r.status_code)
                everyone_answered.wait()  # then the stream closes: its job is cancelled

    start = threading.Barrier(n)
    threads = [threading.Thread(target=ask, args=(start,)) for _ in range(n)]
    for t in threads:
        t.start()
    everyone_answered.wait(timeout=60)
    for t in threads:
        t.join(timeout=60)
    return sorted(statuses)


@pytest.mark.parametrize("limit", [{"jobs_at_once": 2}, {"tokens_per_day": 10_000}])
def test_requests_at_the_same_instant_cannot_slip_past_a_limit(secured: Stack, boss: str, limit: dict[str, Any]) -> None:
    """BUSY holds 6000 tokens: with 10 000 a day, two are admitted (0 and 6000 used or held
    are under the limit, 12 000 is not), as with two jobs at once."""
    name = "race" + next(iter(limit)).split("_")[0]
    key = add_user(secured, name)
    assert api(secured, boss).put(f"/admin/users/{name}/quota", json=limit).status_code == 200
    assert race(secured, key, 8) == [200, 200] + [429] * 6
    wait_for(lambda: not secured.redis.hgetall("hearth:running") and not secured.redis.llen(f"rq:queue:interactive:{MODEL}"), 30,
             "the admitted chats to be cancelled")


def test_a_batch_pauses_at_its_owners_quota_and_goes_on_when_it_allows(secured: Stack, boss: str) -> None:
    key = add_user(secured, "bea")
    assert api(secured, boss).put("/admin/users/bea/quota", json={"batch_lines_per_day": 2}).status_code == 200
    client = openai.OpenAI(base_url=secured.base_url, api_key=key, max_retries=0)
    batch_id = run_batch(client, [request_line(f"l{i}", "Say hi.", max_tokens=2) for i in range(4)])

    def paused_after_two() -> bool:
        batch = api(secured, key).get(f"/batches/{batch_id}").json()
        return batch["quota_paused"] and batch["request_counts"]["completed"] == 2
    wait_for(paused_after_two, 120, "the batch to pause after two lines")
    batch = api(secured, key).get(f"/batches/{batch_id}").json()
    assert batch["status"] == "in_progress" and batch["request_counts"]["failed"] == 0
    assert batch["quota_paused_until"].endswith("+00:00")  # the next midnight
    assert api(secured, key).get("/usage").json()["today"]["total"]["batch_lines"] == 2
    assert api(secured, boss).put("/admin/users/bea/quota", json={"batch_lines_per_day": 10}).status_code == 200
    done = wait_status(client, batch_id, ("completed",), 120)
    assert done.request_counts.completed == 4 and done.request_counts.failed == 0
    assert not done.model_extra["quota_paused"]


def test_a_days_quota_resets_at_midnight_on_redis_clock_in_the_operators_timezone(redis_server, log_dir, make_stack) -> None:
    """Redis's clock, moved (USAGE_CLOCK_OFFSET_S) to 40 s before midnight in Kolkata (UTC+5:30)."""
    zone = ZoneInfo("Asia/Kolkata")
    seconds = redis.Redis(port=redis_server.port).time()[0]
    now = datetime.fromtimestamp(seconds, zone)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), zone)
    offset = (midnight - now).total_seconds() - 40
    stack: Stack = make_stack(AUTH="on", USAGE_TIMEZONE="Asia/Kolkata", USAGE_CLOCK_OFFSET_S=str(offset))
    stack.start_worker()
    stack.start_api()
    key = add_user(stack, "night")
    assert cli(stack, "quota", "night", "--tokens-per-day", "1").returncode == 0
    before = api(stack, key).get("/usage").json()
    assert before["timezone"] == "Asia/Kolkata" and before["resets"]["day"] == midnight.isoformat()
    assert chat(stack, key).status_code == 200
    refused = chat(stack, key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded", "midnight came too soon: a slow start?"
    assert 0 < int(refused.headers["Retry-After"]) <= 40
    assert api(stack, key).get("/usage").json()["day"] == before["day"]
    wait_for(lambda: api(stack, key).get("/usage").json()["day"] != before["day"], 60, "midnight in Kolkata")
    after = api(stack, key).get("/usage").json()
    assert after["day"] == midnight.date().isoformat() and after["today"] == {} and after["left"]["tokens_today"] == 1
    assert chat(stack, key).status_code == 200
