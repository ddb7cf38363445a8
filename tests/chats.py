"""A streaming chat read in a background thread, for tests that act while it runs or waits."""

import threading
import time
from typing import Any

import httpx

from devstack import Stack
from hearth.contract import QueuedEvent
from hearth.sse import read_sse

NO_END = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end-of-text and turn tokens: answers run to max_tokens
# A chat that keeps the worker busy until cancelled (minutes): SmolLM2's end tokens are banned.
BUSY = {"model": "any", "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 6000, "logit_bias": {"0": -100, "2": -100}}


def chat_body(content: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": "any", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "logit_bias": NO_END, "stream": True, "stream_options": {"include_usage": True}, **extra}


class BackgroundChat:
    """POSTs a streaming chat and reads it to the end in a thread: the job id, the text so far,
    Hearth's `queued` events, and how it ended (usage, or an error)."""

    def __init__(self, stack: Stack, body: dict[str, Any], headers: dict[str, str] | None = None):
        self._url, self._body, self._headers = f"{stack.base_url}/chat/completions", body, headers or {}
        self.status: int | None = None
        self.job_id: str | None = None
        self.request_id: str | None = None
        self.text: list[str] = []
        self.positions: list[int] = []
        self.events: list[dict[str, Any]] = []  # Hearth's own events, in order
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self._answered = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._answered.wait(60), "the api did not answer the chat"

    def _run(self) -> None:
        try:
            with httpx.stream("POST", self._url, json=self._body, headers=self._headers, timeout=300) as r:
                self.status, self.job_id, self.request_id = r.status_code, r.headers.get("x-job-id"), r.headers.get("x-request-id")
                self._answered.set()
                for sse in read_sse(r.iter_lines()):
                    for event in sse.hearth_events():
                        self.events.append(event.model_dump(mode="json"))
                        if isinstance(event, QueuedEvent):
                            self.positions.append(event.position)
                    if not sse.data or sse.data == "[DONE]":
                        continue
                    chunk = sse.json()
                    if "error" in chunk:
                        self.error = chunk["error"]
                    elif chunk.get("usage"):
                        self.usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        if choice["delta"].get("content"):
                            self.text.append(choice["delta"]["content"])
        finally:
            self._answered.set()

    def wait(self, what: str, check: Any, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            assert self._thread.is_alive() or check(), f"the stream ended before {what}"
            time.sleep(0.05)

    def wait_for_text(self, timeout: float = 120) -> None:
        self.wait("the first text", lambda: bool(self.text), timeout)

    def wait_queued(self, timeout: float = 60) -> None:
        self.wait("a queued event", lambda: bool(self.positions), timeout)

    def join(self, timeout: float = 300) -> "BackgroundChat":
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end"
        return self

    def cancel(self) -> None:
        base = self._url.removesuffix("/chat/completions")
        httpx.post(f"{base}/jobs/{self.job_id}/cancel", headers=self._headers, timeout=30).raise_for_status()
