"""Accounts: keys on every /v1 route, the first-start admin, the CLI, and privacy between users."""

import re
import subprocess
import sys

import httpx
import openai
import pytest

from devstack import ROOT, Stack, add_user, serve, wait_for

HELLO = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def secured(redis_server, log_dir):
    yield from serve(redis_server, log_dir, AUTH="on")


def cli(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.accounts.cli", "users", *args], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, input=stdin)


def as_user(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=120)


def test_first_start_creates_an_admin_whose_key_works(secured: Stack) -> None:
    wait_for(lambda: "First start" in secured.api.log(), 10, "the first-start message")
    line = next(line for line in secured.api.log().splitlines() if "First start" in line)
    key = re.search(r"hk-[\w-]+", line).group(0)
    assert as_user(secured, key).models.list().data
    assert "Authentication is on" in secured.api.log()
    me = httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {key}"}).json()
    assert me == {"user": "admin", "role": "admin", "auth": True}


def test_every_v1_route_needs_a_valid_key(secured: Stack) -> None:
    for method, path in (("GET", "/models"), ("POST", "/chat/completions"), ("GET", "/jobs/x"),
                         ("GET", "/jobs/x/events"), ("POST", "/jobs/x/cancel"), ("GET", "/me")):
        for headers in ({}, {"Authorization": "Bearer hk-wrong"}, {"Authorization": "Basic abc"}):
            r = httpx.request(method, f"{secured.base_url}{path}", headers=headers, json={"messages": HELLO})
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"http://127.0.0.1:{secured.api_port}/healthz").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        as_user(secured, "hk-nope").chat.completions.create(model="any", messages=HELLO, max_tokens=2)


def test_users_cannot_see_each_others_jobs(secured: Stack) -> None:
    alice, bob = add_user(secured, "alice"), add_user(secured, "bob")
    boss = add_user(secured, "boss", admin=True)
    raw = as_user(secured, alice).chat.completions.with_raw_response.create(model="any", messages=HELLO, max_tokens=4)
    job_id = raw.headers["x-job-id"]
    for key, status in ((bob, 404), (alice, 200), (boss, 200)):
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{secured.base_url}/jobs/{job_id}", headers=headers).status_code == status
        assert httpx.get(f"{secured.base_url}/jobs/{job_id}/events", headers=headers).status_code == status
    r = httpx.post(f"{secured.base_url}/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {bob}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"


def test_cli_lists_by_name_and_revokes(secured: Stack) -> None:
    key = add_user(secured, "carol")
    assert as_user(secured, key).models.list().data
    listing = cli(secured, "list").stdout
    assert re.search(r"^carol\tuser\t1 key\(s\)\tlast seen \S+ \S+\t0 tokens today$", listing, re.M) and "hk-" not in listing
    assert cli(secured, "add", "carol").returncode == 1  # no duplicate names
    assert cli(secured, "revoke", "carol").returncode == 0
    with pytest.raises(openai.AuthenticationError):
        as_user(secured, key).models.list()
    assert "carol" not in cli(secured, "list").stdout
    stored = secured.redis.hgetall("hearth:api_keys")
    assert all(key.encode() not in k and key.encode() not in v for k, v in stored.items())


def test_ui_login_with_password_or_key_gives_a_session(secured: Stack) -> None:
    key = add_user(secured, "dave")
    assert cli(secured, "passwd", "dave", stdin="correct horse\n").returncode == 0
    for secret in ("correct horse", key):
        r = httpx.post(f"{secured.base_url}/login", json={"username": "dave", "password": secret})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        assert as_user(secured, token).chat.completions.create(model="any", messages=HELLO, max_tokens=2).choices
    for name, secret in (("dave", "wrong password"), ("nobody", "correct horse"), ("admin", key)):
        r = httpx.post(f"{secured.base_url}/login", json={"username": name, "password": secret})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"


def test_logout_ends_the_session_but_not_the_key(secured: Stack) -> None:
    key = add_user(secured, "erin")
    token = httpx.post(f"{secured.base_url}/login", json={"username": "erin", "password": key}).json()["token"]
    other = httpx.post(f"{secured.base_url}/login", json={"username": "erin", "password": key}).json()["token"]
    r = httpx.post(f"{secured.base_url}/logout", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json() == {"user": "erin", "signed_out": True}
    r = httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    # The user's other session (another browser) and the API key itself still work.
    assert httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    r = httpx.post(f"{secured.base_url}/logout", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["signed_out"] is False
    assert httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
