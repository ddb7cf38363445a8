"""A streaming chat read event by event, so Hearth's SSE comments (`: hearth {json}`), which
the openai client skips, give the moment a job left the queue."""

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from hearth.contract import Event, QueuedEvent, StartedEvent
from hearth.sse import aread_sse


@dataclass
class ChatTiming:
    sent: float  # perf_counter before the request
    started: float | None = None  # `started` comment: a worker took the job
    first_token: float | None = None
    done: float | None = None  # `[DONE]`
    completion_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the worker's state cache supplied
    max_position: int = 0  # highest queue position reported
    parts: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.done is not None

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _on_hearth(timing: ChatTiming, event: Event, now: float) -> None:
    if isinstance(event, StartedEvent):
        timing.started = now
    elif isinstance(event, QueuedEvent):
        timing.max_position = max(timing.max_position, event.position)


def _on_data(timing: ChatTiming, data: str, now: float) -> None:
    if data == "[DONE]":
        timing.done = now
        return
    chunk = json.loads(data)
    if "error" in chunk:
        timing.error = str(chunk["error"].get("code") or chunk["error"].get("message"))
        return
    if chunk.get("usage"):
        usage = chunk["usage"]
        timing.completion_tokens = int(usage["completion_tokens"])
        timing.prompt_tokens = int(usage["prompt_tokens"])
        timing.cached_tokens = int(usage.get("prompt_tokens_details", {}).get("cached_tokens", 0))
    for choice in chunk.get("choices", []):
        content = choice.get("delta", {}).get("content")
        if content:
            timing.first_token = timing.first_token or now
            timing.parts.append(content)


async def stream_chat(client: httpx.AsyncClient, base_url: str, api_key: str, body: dict[str, Any]) -> ChatTiming:
    timing = ChatTiming(sent=time.perf_counter())
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        async with client.stream("POST", f"{base_url}/chat/completions", json=body, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                timing.error = f"HTTP {response.status_code}"
                return timing
            async for sse in aread_sse(response.aiter_lines()):
                now = time.perf_counter()
                for event in sse.hearth_events():
                    _on_hearth(timing, event, now)
                if sse.data:
                    _on_data(timing, sse.data, now)
    except httpx.HTTPError as exc:
        timing.error = type(exc).__name__
    if timing.done is None and timing.error is None:
        timing.error = "stream ended without [DONE]"
    return timing
