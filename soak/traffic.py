"""One simulated person: a loop of actions picked at random (seeded), each of whose requests is
entered in the ledger with its outcome. Only loopback addresses are used (the soak's stack)."""

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from hearth.sse import read_sse
from soak.ledger import Ledger

DEADLINE_S = 120  # per request, and for a job or batch to reach the state it must reach
# SmolLM2's end tokens banned: a chat that runs until cancelled, or for `max_tokens`.
NO_END = {"0": -100, "2": -100}


class Unexpected(Exception):
    """An answer that no outcome explains: entered as unaccounted, with what happened."""


class Entered(Exception):
    """Stops an action whose request was already entered as unaccounted."""


def error_code(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error.get("code") or error.get("type"))
    except (ValueError, KeyError, TypeError):
        raise Unexpected(f"{response.status_code} without an OpenAI error body") from None


class Person:
    def __init__(self, base_url: str, name: str, key: str, ledger: Ledger, seed: int, max_tokens: int):
        self.base_url, self.name, self.ledger, self.max_tokens = base_url, name, ledger, max_tokens
        self.rng = random.Random(seed)
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=DEADLINE_S)
        self.actions: dict[str, Callable[[], None]] = {
            "chat": self.chat, "stream": self.stream, "cancel": self.cancel, "leave": self.leave,
            "reattach": self.reattach, "bad": self.bad_request, "flood": self.flood, "batch": self.batch,
        }
        self.weights = {"chat": 3, "stream": 3, "cancel": 2, "leave": 2, "reattach": 2, "bad": 3, "flood": 1, "batch": 1}

    def run(self, until: float) -> None:
        names = list(self.weights)
        while time.monotonic() < until:
            self.act(self.rng.choices(names, [self.weights[n] for n in names])[0])

    def act(self, name: str) -> None:
        try:
            self.actions[name]()
        except Entered:
            pass
        except Unexpected as exc:
            self.ledger.lost(name, str(exc))

    # -- requests, each settled in the ledger ---------------------------------------------

    def request(self, method: str, path: str, expect: dict[int, str], **kwargs: Any) -> httpx.Response:
        """One request whose status must be among `expect` (status -> outcome; a 4xx outcome
        gets the error code appended as its reason)."""
        self.ledger.open()
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.ledger.lost(f"{method} {path}", f"{type(exc).__name__}: {exc}")
            raise Entered from None
        self._settle(r, expect)
        return r

    def _settle(self, r: httpx.Response, expect: dict[int, str]) -> None:
        outcome = expect.get(r.status_code)
        if outcome is None:
            self.ledger.lost(f"{r.request.method} {r.request.url.path}", f"{r.status_code} {r.text[:120]}")
            raise Entered
        self.ledger.enter(f"{outcome} ({error_code(r)})" if r.status_code >= 400 else outcome)

    def body(self, max_tokens: int | None = None, **extra: object) -> dict[str, object]:
        words = self.rng.choice(["owls", "tea", "rivers", "bread", "clocks"])
        return {"model": "any", "messages": [{"role": "user", "content": f"One fact about {words}."}],
                "max_tokens": max_tokens or self.max_tokens, **extra}

    def status(self, job_id: str) -> str:
        return str(self.request("GET", f"/jobs/{job_id}", {200: "answered: job status"}).json()["status"])

    def wait_status(self, job_id: str, wanted: set[str]) -> str:
        deadline = time.monotonic() + DEADLINE_S
        while (found := self.status(job_id)) not in wanted:
            if found in ("completed", "failed", "cancelled", "timed_out") or time.monotonic() > deadline:
                raise Unexpected(f"job {job_id} is {found}, expected {sorted(wanted)}")
            time.sleep(0.2)
        return found

    # -- actions ----------------------------------------------------------------------------

    def chat(self) -> None:
        self.request("POST", "/chat/completions", {200: "answered: chat", 429: "rejected: 429"}, json=self.body())

    def _stream(self, body: dict[str, object], on_content: Callable[[str], bool] | None = None,
                ends: dict[str, str] | None = None) -> tuple[str, str, str]:
        """A streamed chat, entered by how it ended: [DONE], left by us (when `on_content`
        says so), a 429, or an error event listed in `ends` (code -> outcome). Returns (job
        id, text, end)."""
        outcomes = {"done": "answered: chat streamed", "left": "cancelled: client left mid-stream", **(ends or {})}
        self.ledger.open()
        job_id, text, end = "", "", ""
        try:
            with self.http.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
                if r.status_code != 200:
                    r.read()
                    self._settle(r, {429: "rejected: 429"})
                    return "", "", "rejected"
                job_id = r.headers["x-job-id"]
                for sse in read_sse(r.iter_lines()):
                    if not sse.data:  # keep-alive pings, Hearth's comments
                        continue
                    if sse.data == "[DONE]":
                        end = "done"
                        break
                    chunk = json.loads(sse.data)
                    if "error" in chunk:
                        end = str(chunk["error"]["code"])
                        break
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        text += chunk["choices"][0]["delta"]["content"]
                        if on_content is not None and on_content(job_id):
                            end = "left"
                            break
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self.ledger.lost("stream", f"job {job_id or '?'}: {type(exc).__name__}: {exc}")
            raise Entered from None
        if end not in outcomes:
            self.ledger.lost("stream", f"job {job_id} ended with {end or 'no [DONE] and no error'}")
            raise Entered
        self.ledger.enter(outcomes[end])
        return job_id, text, end

    def stream(self) -> None:
        self._stream(self.body())

    def cancel(self) -> None:
        asked: list[str] = []

        def cancel_at_first_token(job_id: str) -> bool:
            if not asked:
                asked.append(job_id)
                self.request("POST", f"/jobs/{job_id}/cancel", {200: "answered: cancel request"})
            return False

        job_id, _, end = self._stream(self.body(64, logit_bias=NO_END), cancel_at_first_token,
                                      {"cancelled": "cancelled: by request"})
        if end == "cancelled" and self.status(job_id) != "cancelled":
            raise Unexpected(f"job {job_id} was cancelled in its stream but is not in its status")

    def leave(self) -> None:
        job_id, _, end = self._stream(self.body(64, logit_bias=NO_END), lambda _: True)
        if end == "left":
            self.wait_status(job_id, {"cancelled"})  # the api cancels the job of a client that left

    def reattach(self) -> None:
        """The chat streams in one thread; meanwhile its events are read, dropped after the
        first token and resumed with Last-Event-ID: together they must give the same text."""
        found: dict[str, str] = {}
        ready = threading.Event()

        def first_token(job_id: str) -> bool:
            found["job"] = job_id
            ready.set()
            return False

        def chat() -> None:
            try:
                found["job"], found["text"], found["end"] = self._stream(self.body(24, logit_bias=NO_END), first_token)
            except Entered:
                pass
            except Unexpected as exc:
                self.ledger.lost("reattach", str(exc))
            ready.set()

        thread = threading.Thread(target=chat, daemon=True)
        thread.start()
        ready.wait(DEADLINE_S)
        text = rest = ""
        if "job" in found:
            text, last, ended = self._events(found["job"], None)
            if not ended:
                rest, _, _ = self._events(found["job"], last)
        thread.join(DEADLINE_S)
        if found.get("end") == "done" and text + rest != found["text"]:
            raise Unexpected(f"job {found['job']}: the re-attached events' text differs from the streamed one")

    def _events(self, job_id: str, last_id: str | None) -> tuple[str, str | None, bool]:
        """The job's token text from `/v1/jobs/{id}/events`: the first time until one token
        (then the connection is dropped), with `last_id` as Last-Event-ID until the end.
        Returns the text, the last event id and whether the final event was read."""
        headers = {"Last-Event-ID": last_id} if last_id else {}
        outcome = "answered: events, re-attached" if last_id else "answered: events, left after a token"
        self.ledger.open()
        text, ended = "", False
        try:
            with self.http.stream("GET", f"/jobs/{job_id}/events", headers=headers) as r:
                if r.status_code != 200:
                    r.read()
                    self._settle(r, {})
                for sse in read_sse(r.iter_lines()):
                    last_id = sse.id or last_id
                    if sse.event == "token":
                        text += json.loads(sse.data)["text"]
                        if not headers:
                            break
                    if sse.event in ("done", "error"):
                        ended = True
                        break
        except (httpx.HTTPError, ValueError) as exc:
            self.ledger.lost("events", f"job {job_id}: {type(exc).__name__}: {exc}")
            raise Entered from None
        self.ledger.enter(outcome)
        return text, last_id, ended

    def bad_request(self) -> None:
        case = self.rng.randrange(5)
        if case == 0:
            self.request("POST", "/chat/completions", {400: "rejected: 400"}, json={**self.body(), "messages": []})
        elif case == 1:
            self.request("POST", "/chat/completions", {400: "rejected: 400"}, json={**self.body(), "max_tokens": -1})
        elif case == 2:
            self.request("POST", "/chat/completions", {400: "rejected: 400"}, content=b'{"messages": [',
                         headers={"content-type": "application/json"})
        elif case == 3:
            self.request("POST", "/chat/completions", {401: "rejected: 401"}, json=self.body(),
                         headers={"Authorization": "Bearer hk-not-a-key"})
        else:
            self.request("GET", "/jobs/0123456789abcdef", {404: "rejected: 404"})

    def flood(self) -> None:
        """More chats at once than one person may have waiting: the rest get 429."""
        threads = [threading.Thread(target=self.act, args=("chat",), daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S * 2)

    def batch(self) -> None:
        lines = [{"custom_id": f"l{i}", "method": "POST", "url": "/v1/chat/completions", "body": self.body(4)} for i in range(2)]
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        file_id = self.request("POST", "/files", {200: "answered: file upload"}, files={"file": ("soak.jsonl", data)},
                               data={"purpose": "batch"}).json()["id"]
        batch = self.request("POST", "/batches", {200: "answered: batch created"},
                             json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json()
        deadline = time.monotonic() + DEADLINE_S
        while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            if time.monotonic() > deadline:
                raise Unexpected(f"batch {batch['id']} still {batch['status']} after {DEADLINE_S} s")
            time.sleep(0.5)
            batch = self.request("GET", f"/batches/{batch['id']}", {200: "answered: batch status"}).json()
        if batch["status"] != "completed" or batch["request_counts"]["completed"] != len(lines):
            raise Unexpected(f"batch {batch['id']} ended {batch['status']} with {batch['request_counts']}")
        output = self.request("GET", f"/files/{batch['output_file_id']}/content", {200: "answered: batch output"}).text
        if len(output.splitlines()) != len(lines):
            raise Unexpected(f"batch {batch['id']} output has {len(output.splitlines())} lines")
        for done in (file_id, batch["output_file_id"]):
            self.request("DELETE", f"/files/{done}", {200: "answered: file deleted"})
