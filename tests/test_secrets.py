"""Secrets and the network: who sees per-user metrics, sign-in guessing slowed down, no key,
password, token or prompt in any log line, CORS off unless configured."""

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from devstack import ROOT, Stack, add_user, serve

METRICS_TOKEN = "scrape-me-5b1f0c7e2d"
HELLO = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def secured(redis_server, log_dir) -> Iterator[Stack]:
    yield from serve(redis_server, log_dir, AUTH="on", METRICS_TOKEN=METRICS_TOKEN,
                     LOGIN_MAX_FAILURES="3", LOGIN_LOCKOUT_S="60")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def passwd(stack: Stack, name: str, password: str) -> None:
    subprocess.run([sys.executable, "-m", "api.accounts.cli", "users", "passwd", name], env=stack.env, cwd=ROOT,
                   input=f"{password}\n", text=True, capture_output=True, check=True)


def sign_in(stack: Stack, name: str, password: str, address: str) -> httpx.Response:
    """From a loopback address of our choosing (all of 127/8 reaches the api on 127.0.0.1),
    so that tests of the per-address count do not share one."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address)) as client:
        return client.post(f"{stack.base_url}/login", json={"username": name, "password": password})


def chat(stack: Stack, key: str, content: str) -> httpx.Response:
    body = {"model": "any", "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    return httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=bearer(key), timeout=120)


def test_metrics_hides_users_from_anonymous(secured: Stack) -> None:
    alice, boss = add_user(secured, "alice"), add_user(secured, "boss", admin=True)
    assert chat(secured, alice, "hello").status_code == 200
    url = f"http://127.0.0.1:{secured.api_port}/metrics"

    anonymous = httpx.get(url)
    assert anonymous.status_code == 200
    assert "hearth_jobs_total" in anonymous.text and "hearth_tokens_predicted_total" in anonymous.text
    assert "hearth_user_tokens" not in anonymous.text and "alice" not in anonymous.text
    # A user who is not an admin sees what anyone sees.
    assert "alice" not in httpx.get(url, headers=bearer(alice)).text
    for key in (boss, METRICS_TOKEN):
        shown = httpx.get(url, headers=bearer(key))
        assert shown.status_code == 200
        assert 'hearth_user_tokens_total{kind="completion",user="alice"}' in shown.text
    wrong = httpx.get(url, headers=bearer("not-the-token"))
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_repeated_failed_sign_ins_get_429_per_user(secured: Stack) -> None:
    add_user(secured, "frank"), add_user(secured, "grace")
    passwd(secured, "frank", "frank's long password")
    passwd(secured, "grace", "grace's long password")
    for _ in range(3):
        assert sign_in(secured, "frank", "guess", "127.0.0.2").status_code == 401
    # frank's name is locked, from any address, even with the right password...
    locked = sign_in(secured, "frank", "frank's long password", "127.0.0.3")
    assert locked.status_code == 429 and locked.json()["error"]["code"] == "too_many_sign_ins"
    assert 1 <= int(locked.headers["Retry-After"]) <= 60
    # ...while grace signs in from another address.
    assert sign_in(secured, "grace", "grace's long password", "127.0.0.3").status_code == 200


def test_repeated_failed_sign_ins_get_429_per_address(secured: Stack) -> None:
    add_user(secured, "heidi")
    passwd(secured, "heidi", "heidi's long password")
    for name in ("ivan", "judy", "mallory"):
        assert sign_in(secured, name, "guess", "127.0.0.4").status_code == 401
    locked = sign_in(secured, "heidi", "heidi's long password", "127.0.0.4")
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
    assert sign_in(secured, "heidi", "heidi's long password", "127.0.0.5").status_code == 200


def test_a_successful_sign_in_clears_the_users_count(secured: Stack) -> None:
    add_user(secured, "ken")
    passwd(secured, "ken", "ken's long password")
    for address in ("127.0.0.6", "127.0.0.7"):
        assert sign_in(secured, "ken", "guess", address).status_code == 401
        assert sign_in(secured, "ken", "guess", address).status_code == 401
        assert sign_in(secured, "ken", "ken's long password", address).status_code == 200


def test_no_key_password_token_or_prompt_in_any_log(secured: Stack) -> None:
    key = add_user(secured, "logan")
    password = "logan-Secret-Passw0rd-7731"
    passwd(secured, "logan", password)
    token = sign_in(secured, "logan", password, "127.0.0.8").json()["token"]
    wrong_password = "wrong-Zebra-Passw0rd-4410"
    assert sign_in(secured, "logan", wrong_password, "127.0.0.9").status_code == 401
    bogus_key = "hk-bogus-Key-0f9e8d7c6b5a"
    assert chat(secured, bogus_key, "hello").status_code == 401
    prompt = "the ultramarine walrus whispers 5521"
    assert chat(secured, key, prompt).status_code == 200
    assert chat(secured, token, prompt + " again").status_code == 200
    r = httpx.post(f"{secured.base_url}/chat/completions", headers=bearer(key),
                   json={"messages": [{"role": "wizard", "content": prompt}]})
    assert r.status_code == 400 and prompt not in r.text  # an error message does not echo it
    httpx.get(f"http://127.0.0.1:{secured.api_port}/metrics", headers=bearer(METRICS_TOKEN))
    assert httpx.post(f"{secured.base_url}/logout", headers=bearer(token)).status_code == 200

    logs = [proc.log_path for proc in [*secured.workers, secured.api]]
    assert len(logs) == 2 and all(path.stat().st_size for path in logs)
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in (key, password, token, wrong_password, bogus_key, prompt, METRICS_TOKEN):
            assert secret not in text, f"{path.name} contains a secret"


def test_cors_is_off_unless_configured(secured: Stack, make_stack) -> None:
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    r = httpx.options(f"{secured.base_url}/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    s = make_stack(CORS_ORIGINS="http://hearth.lan:8080")
    s.start_api()
    allowed = httpx.options(f"{s.base_url}/chat/completions", headers={**preflight, "Origin": "http://hearth.lan:8080"})
    assert allowed.headers.get("access-control-allow-origin") == "http://hearth.lan:8080"
    assert "access-control-allow-origin" not in httpx.options(f"{s.base_url}/chat/completions", headers=preflight).headers
