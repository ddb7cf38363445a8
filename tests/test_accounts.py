"""People and keys through the api: admins' routes (`/v1/admin/users…`) refuse everyone else,
a person's own account (`/v1/account…`), nothing shows a secret after its creation, every
change is logged without one, and the CLI shares the same rules."""

import asyncio
import hashlib
import json
import secrets
import subprocess
import sys
from collections.abc import Callable

import httpx

from devstack import ROOT, Stack, add_user, wait_for


def api(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def cli(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "users", *args], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, input=stdin)


ADMIN_ROUTES: tuple[tuple[str, str, dict[str, object] | None], ...] = (("GET", "/admin/users", None), ("POST", "/admin/users", {"name": "x"}),
                ("PUT", "/admin/users/boss/password", {"password": "long enough"}),
                ("POST", "/admin/users/boss/password/reset", None), ("PUT", "/admin/users/boss/role", {"role": "user"}),
                ("POST", "/admin/users/boss/keys", {}), ("GET", "/admin/users/boss/revocation", None),
                ("DELETE", "/admin/users/boss", None), ("GET", "/admin/quotas", None),
                ("PUT", "/admin/quotas/default", {"tokens_per_day": 1}), ("PUT", "/admin/users/boss/quota", {"jobs_at_once": 1}),
                ("DELETE", "/admin/users/boss/quota", None), ("GET", "/usage?user=boss", None))


def test_admin_routes_refuse_everyone_else_and_tell_nothing(secured: Stack, boss: str) -> None:
    kid = add_user(secured, "kid")
    with api(secured, kid) as http:
        for method, path, body in ADMIN_ROUTES:
            for target in ("boss", "nobody"):  # the same answer whether the person exists or not
                r = http.request(method, path.replace("boss", target), json=body)
                assert r.status_code == 403, (method, path, r.text)
                assert r.json()["error"]["code"] == "admin_only"
    for method, path, body in ADMIN_ROUTES:
        assert httpx.request(method, f"{secured.base_url}{path}", json=body).status_code == 401
    # Nothing changed: boss is still an admin, nobody was added, no limit set.
    with api(secured, boss) as http:
        people = {p["name"]: p for p in http.get("/admin/users").json()["data"]}
        assert people["boss"]["role"] == "admin" and "x" not in people
        assert http.get("/admin/quotas").json() == {"default": {"tokens_per_day": None, "tokens_per_month": None,
                                                                "jobs_at_once": None, "batch_lines_per_day": None}, "people": {}}


def test_admin_adds_a_person_whose_key_is_shown_once(secured: Stack, boss: str) -> None:
    with api(secured, boss) as http:
        r = http.post("/admin/users", json={"name": "gran"})
        assert r.status_code == 200, r.text
        key = r.json()["key"]
        assert r.json() == {"name": "gran", "role": "user", "key": key} and key.startswith("hk-")
        assert http.post("/admin/users", json={"name": "gran"}).status_code == 409
        assert http.post("/admin/users", json={"name": "no spaces"}).status_code == 400
        with api(secured, key) as gran:
            assert gran.get("/me").json()["user"] == "gran"
        listing = http.get("/admin/users")
        gran_row = next(p for p in listing.json()["data"] if p["name"] == "gran")
        assert gran_row["role"] == "user" and gran_row["keys"] == 1 and gran_row["has_password"] is False
        assert gran_row["last_seen"] is not None and gran_row["usage_today"] == {}
        assert key not in listing.text and "hk-" not in listing.text


def test_passwords_set_and_reset_by_an_admin_are_never_shown_again(secured: Stack, boss: str) -> None:
    add_user(secured, "hal")
    with api(secured, boss) as http:
        assert http.put("/admin/users/hal/password", json={"password": "short"}).json()["error"]["code"] == "password_too_short"
        assert http.put("/admin/users/hal/password", json={"password": "hal's long one"}).json() == {"name": "hal", "password_set": True}
        assert httpx.post(f"{secured.base_url}/login", json={"username": "hal", "password": "hal's long one"}).status_code == 200
        new = http.post("/admin/users/hal/password/reset").json()["password"]
        assert len(new) >= 12
        assert httpx.post(f"{secured.base_url}/login", json={"username": "hal", "password": "hal's long one"}).status_code == 401
        assert httpx.post(f"{secured.base_url}/login", json={"username": "hal", "password": new}).status_code == 200
        assert http.put("/admin/users/nobody/password", json={"password": "long enough"}).status_code == 404
        assert new not in http.get("/admin/users").text
    logged = secured.api.log()
    assert new not in logged and "hal's long one" not in logged
    changes = [json.loads(line) for line in logged.splitlines() if '"account ' in line]
    assert {"actor": "boss", "action": "reset_password", "target": "hal"}.items() <= next(
        c for c in changes if c.get("action") == "reset_password").items()


def test_roles_change_but_the_last_admin_stays(secured: Stack, boss: str) -> None:
    ivy = add_user(secured, "ivy")
    with api(secured, boss) as http, api(secured, ivy) as ivy_http:
        assert ivy_http.get("/admin/users").status_code == 403
        assert http.put("/admin/users/ivy/role", json={"role": "admin"}).json() == {"name": "ivy", "role": "admin"}
        assert ivy_http.get("/admin/users").status_code == 200
        assert http.put("/admin/users/ivy/role", json={"role": "user"}).status_code == 200
        assert ivy_http.get("/admin/users").status_code == 403
        assert http.put("/admin/users/ivy/role", json={"role": "owner"}).status_code == 400
    # The first-start admin and boss are the admins: demoting both leaves one standing.
    assert cli(secured, "unadmin", "admin").returncode == 0
    refused = cli(secured, "unadmin", "boss")
    assert refused.returncode == 1 and "last admin" in refused.stderr
    assert cli(secured, "admin", "admin").returncode == 0


def test_revoking_says_what_it_deletes_first_then_deletes_it(secured: Stack, boss: str) -> None:
    jo = add_user(secured, "jo")
    token = httpx.post(f"{secured.base_url}/login", json={"username": "jo", "password": jo}).json()["token"]
    with api(secured, jo) as jo_http:
        assert jo_http.post("/conversations", json={}).status_code == 200
        assert jo_http.post("/account/keys", json={"name": "laptop"}).status_code == 200
    with api(secured, boss) as http:
        preview = http.get("/admin/users/jo/revocation").json()
        assert preview == {"user": "jo", "deleted": False, "keys": 2, "sessions": 1, "conversations": 1, "documents": 0, "responses": 0,
                           "usage_records": 0}
        assert http.get("/admin/users/jo/revocation").json() == preview  # a preview deletes nothing
        assert http.delete("/admin/users/boss").json()["error"]["code"] == "revoke_self"
        done = http.delete("/admin/users/jo").json()
        assert done == {**preview, "deleted": True}
        assert http.get("/admin/users/jo/revocation").status_code == 404
        assert http.delete("/admin/users/jo").status_code == 404
    for secret in (jo, token):
        assert httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert not secured.redis.exists("hearth:sessions:jo") and not secured.redis.keys("hearth:conv:jo:*")


def test_own_keys_are_named_dated_and_revocable(secured: Stack) -> None:
    kim = add_user(secured, "kim")
    with api(secured, kim) as http:
        made = http.post("/account/keys", json={"name": "phone"})
        assert made.status_code == 200
        second = made.json()["key"]
        keys = http.get("/account/keys").json()["data"]
        assert [k["name"] for k in keys] == ["first key", "phone"] and all(k["created"] for k in keys)
        assert "hk-" not in http.get("/account/keys").text
        first = keys[0]
        wait_for(lambda: http.get("/account/keys").json()["data"][0]["last_used"] is not None, 5, "the first key's last use")
        with api(secured, second) as phone:
            assert phone.get("/me").status_code == 200
            assert phone.delete(f"/account/keys/{first['id']}").json() == {"id": first["id"], "object": "hearth.api_key", "deleted": True}
            assert phone.get("/account/keys").json()["data"][0]["name"] == "phone"
            assert phone.delete(f"/account/keys/{first['id']}").status_code == 404
        assert http.get("/me").status_code == 401  # that was this client's key
    # Another person's key id is not found, not deleted.
    lee = add_user(secured, "lee")
    with api(secured, lee) as lee_http, api(secured, second) as kim_http:
        theirs = kim_http.get("/account/keys").json()["data"][0]["id"]
        assert lee_http.delete(f"/account/keys/{theirs}").status_code == 404
        assert kim_http.get("/me").status_code == 200


def test_own_password_needs_the_current_one(secured: Stack) -> None:
    max_key = add_user(secured, "max")
    with api(secured, max_key) as http:
        assert http.put("/account/password", json={"new": "first password"}).status_code == 200  # none was set
        r = http.put("/account/password", json={"current": "wrong one", "new": "second password"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_password"
        assert http.put("/account/password", json={"current": "first password", "new": "second password"}).status_code == 200
    assert httpx.post(f"{secured.base_url}/login", json={"username": "max", "password": "second password"}).status_code == 200
    assert "second password" not in secured.api.log()


def test_sign_out_everywhere_ends_every_session_not_the_keys(secured: Stack) -> None:
    ned = add_user(secured, "ned")
    tokens = [httpx.post(f"{secured.base_url}/login", json={"username": "ned", "password": ned}).json()["token"] for _ in range(2)]
    with api(secured, tokens[0]) as http:
        assert http.post("/account/sign-out-everywhere").json() == {"name": "ned", "sessions_ended": 2}
    for token in tokens:
        assert httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {ned}"}).status_code == 200


def test_hearth_help_lists_every_command(secured: Stack) -> None:
    out = subprocess.run([sys.executable, "-m", "cli", "--help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "users" in out and "batch" in out
    quota = cli(secured, "quota", "--help").stdout
    assert "--tokens-per-day" in quota and "--clear" in quota and "--default" in quota


def bare_stack(make_stack: Callable[..., Stack], *admins: str) -> tuple[Stack, list[str]]:
    """An api alone (accounts need no worker) whose only admins are `admins`, added before its
    first start (so there is no first-start `admin`)."""
    s = make_stack(AUTH="on")
    keys = [add_user(s, name, admin=True) for name in admins]
    return s, keys


async def at_once(stack: Stack, *calls: tuple[str, str, str, dict[str, object] | None]) -> list[httpx.Response]:
    """(key, method, path, body) requests sent together."""
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        return list(await asyncio.gather(*(http.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
                                           for key, method, path, body in calls)))


def test_the_last_admin_stays_one_when_two_changes_race(make_stack: Callable[..., Stack]) -> None:
    s, (ann, bob) = bare_stack(make_stack, "ann", "bob")
    s.start_api()
    demote = {"role": "user"}
    for _ in range(10):  # each round a race: checked one after the other, both would pass
        answers = asyncio.run(at_once(s, (ann, "PUT", "/admin/users/ann/role", demote), (bob, "PUT", "/admin/users/bob/role", demote)))
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        assert next(a for a in answers if a.status_code == 409).json()["error"]["code"] == "last_admin"
        (admin, kept), demoted = ((ann, "ann"), "bob") if answers[0].status_code == 409 else ((bob, "bob"), "ann")
        with api(s, admin) as http:
            assert [p["name"] for p in http.get("/admin/users").json()["data"] if p["role"] == "admin"] == [kept]
            assert http.put(f"/admin/users/{demoted}/role", json={"role": "admin"}).status_code == 200
    # Revoking each other at once: one goes (the other's request fails its sign-in if it came
    # later, or is refused as the last admin's), never both.
    answers = asyncio.run(at_once(s, (ann, "DELETE", "/admin/users/bob", None), (bob, "DELETE", "/admin/users/ann", None)))
    assert sorted(a.status_code for a in answers) in ([200, 401], [200, 409]), [a.text for a in answers]
    assert [json.loads(raw)["role"] for raw in s.redis.hvals("hearth:users")] == ["admin"]


def test_sessions_made_before_the_index_end_with_sign_out_everywhere_and_revoke(make_stack: Callable[..., Stack]) -> None:
    s, (ann,) = bare_stack(make_stack, "ann")
    cy = add_user(s, "cy")
    add_user(s, "di")
    # Sessions as the api wrote them before hearth:sessions:{name}: the session key alone.
    old = {name: secrets.token_urlsafe(32) for name in ("cy", "di")}
    for name, token in old.items():
        s.redis.set(f"hearth:session:{hashlib.sha256(token.encode()).hexdigest()}", name, ex=3600)
    assert '"sessions": 2' in s.start_api().log()  # indexed at the start
    for token in old.values():
        assert httpx.get(f"{s.base_url}/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with api(s, cy) as http:
        assert http.post("/account/sign-out-everywhere").json() == {"name": "cy", "sessions_ended": 1}
    with api(s, ann) as http:
        assert http.get("/admin/users/di/revocation").json()["sessions"] == 1
        assert http.delete("/admin/users/di").json()["sessions"] == 1
    for token in old.values():
        assert httpx.get(f"{s.base_url}/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert not s.redis.keys("hearth:session:*")
