"""`GET /v1/status` and the ui's Status tab: a running and a queued job appear with their state
and place; admins see every job, users their own; finished jobs are listed with their outcome."""

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from gradio_client import Client
from redis.asyncio import Redis as AsyncRedis

from api.accounts.users import UserStore
from devstack import BATCH, INTERACTIVE, MODEL, Process, Stack, free_port, wait_for
from tests.chats import BackgroundChat, chat_body


def add_users(redis_url: str, **admin: bool) -> dict[str, str]:
    """Users named by the keywords (True = admin), each with a new API key."""

    async def add() -> dict[str, str]:
        redis = AsyncRedis.from_url(redis_url)
        try:
            store = UserStore(redis)
            return {name: await store.add(name, admin=is_admin) for name, is_admin in admin.items()}
        finally:
            await redis.aclose()

    return asyncio.run(add())


def status(stack: Stack, key: str) -> dict[str, Any]:
    r = httpx.get(f"{stack.base_url}/status", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def poll(stack: Stack, key: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = status(stack, key)
        if check(s):
            return s
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {s}"
        time.sleep(0.2)


def start_ui(stack: Stack, log_dir: Path) -> tuple[list[Process], str]:
    """A ui whose session needs no key: it talks to a second api process on the same Redis
    with AUTH=off (whose caller is the admin `local`), until the ui has a sign-in."""
    api_port, ui_port = free_port(), free_port()
    api = Process("api", [sys.executable, "-m", "api"], {**stack.env, "AUTH": "off", "API_PORT": str(api_port)}, log_dir)
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{api_port}/healthz").status_code == 200, 30, "the second api", api)
    url = f"http://127.0.0.1:{ui_port}/"
    ui = Process("ui", [sys.executable, "-m", "ui"], {**stack.env, "UI_PORT": str(ui_port), "API_PORT": str(api_port)}, log_dir)
    wait_for(lambda: httpx.get(url).status_code == 200, 90, "the ui", ui)
    return [api, ui], url


def test_status_shows_the_running_and_the_queued_job_to_whom_it_may(make_stack: Callable[..., Stack], log_dir: Path) -> None:
    stack = make_stack(AUTH="on")
    stack.start_worker()
    stack.start_api()
    keys = add_users(stack.redis_url, root=True, alice=False, bob=False)
    ui, ui_url = start_ui(stack, log_dir)
    try:
        auth = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
        assert httpx.get(f"{stack.base_url}/status", timeout=30).status_code == 401

        long = BackgroundChat(stack, chat_body("Tell me a very long story about a lighthouse.", 2000), auth["alice"])
        long.wait_for_text()  # it runs until cancelled below: the short one waits until then
        short = BackgroundChat(stack, chat_body("Name a colour.", 8), auth["bob"])
        short.wait_queued()

        # The admin sees both, with the runner's live speed (from the worker's heartbeat).
        root = poll(stack, keys["root"], lambda s: bool(s["running"]) and s["running"][0]["tokens_per_s"] is not None, "live speed")
        assert root["admin"] and root["queues"] == {INTERACTIVE: 1, f"embedding:{MODEL}": 0, BATCH: 0}
        assert [(j["id"], j["user"], j["queue"], j["position"]) for j in root["queued"]] == [(short.job_id, "bob", INTERACTIVE, 1)]
        [running] = root["running"]
        assert (running["id"], running["user"]) == (long.job_id, "alice")
        assert running["tokens"] >= 1 and running["tokens_per_s"] > 0 and running["elapsed_s"] >= 0
        assert [w["state"] for w in root["workers"]] == ["busy"]
        # Alice sees her running job and the queue's length, not Bob's job.
        alice = status(stack, keys["alice"])
        assert not alice["admin"] and alice["queued"] == [] and alice["queues"][INTERACTIVE] == 1
        assert alice["running"][0]["id"] == long.job_id
        # Bob sees his place in line, and that something runs and how fast, but not whose.
        bob = status(stack, keys["bob"])
        assert [(j["id"], j["position"]) for j in bob["queued"]] == [(short.job_id, 1)]
        assert (bob["running"][0]["id"], bob["running"][0]["user"]) == (None, None) and bob["running"][0]["tokens"] >= 1
        # The queue depth series has sampled the waiting job (every 5 s).
        poll(stack, keys["root"], lambda s: any(p.get(INTERACTIVE) == 1 for p in s["series"]["queue_depth"]), "a depth sample", 15)

        # The Status tab shows the same (its api_key input is the session's, None here).
        summary, queue, *_ = Client(ui_url, verbose=False).predict(api_name="/refresh_status")
        assert "**Running:**" in summary and long.job_id[:8] in summary
        assert [row[-1] for row in queue["data"]] == [short.job_id]

        long.cancel()
        assert long.join().error["code"] == "cancelled"
        assert short.join().usage is not None
        root = poll(stack, keys["root"], lambda s: len(s["recent"]) == 2 and not s["running"], "both jobs to end")
        assert [(r["id"], r["user"], r["outcome"]) for r in root["recent"]] == [
            (short.job_id, "bob", "completed"), (long.job_id, "alice", "cancelled")]
        assert root["queued"] == [] and root["queues"] == {INTERACTIVE: 0, f"embedding:{MODEL}": 0, BATCH: 0}
        assert [p["outcome"] for p in root["series"]["jobs"]] == ["cancelled", "completed"]
        assert all(p["ttft_s"] > 0 for p in root["series"]["jobs"])
        assert [r["id"] for r in status(stack, keys["alice"])["recent"]] == [long.job_id]
        assert [r["id"] for r in status(stack, keys["bob"])["recent"]] == [short.job_id]
    finally:
        for proc in ui:
            proc.stop()
