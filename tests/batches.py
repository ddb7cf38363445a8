"""Batches through the official client, for the tests: lines, files, waiting on a batch, and a
batch line paused by a chat."""

import json
import threading
from dataclasses import dataclass
from typing import Any

import openai

from devstack import Stack, wait_for
from hearth.sse import SseEvent
from tests.sse import job_events


def request_line(custom_id: str, content: str, max_tokens: int = 8, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "any", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **body}}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def run_batch(client: openai.OpenAI, lines: list[Any], window: str = "24h", endpoint: str = "/v1/chat/completions", **extra: Any) -> str:
    uploaded = client.files.create(file=("lines.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint=endpoint,
                                 completion_window=window, **extra).id


def wait_status(client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...], timeout: float = 240) -> Any:
    found: dict[str, Any] = {}

    def ended() -> bool:
        found["batch"] = client.batches.retrieve(batch_id)
        return found["batch"].status in statuses

    wait_for(ended, timeout, f"batch {batch_id} to be {statuses}")
    return found["batch"]


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


@dataclass
class PausedRun:
    batch: Any  # the batch, completed
    followed: list[SseEvent]  # the line's events, as they came (its log is dropped once it is filed)
    chat_id: str  # the chat that paused it


def pause_a_line(stack: Stack, client: openai.OpenAI, batch_id: str, min_events: int) -> PausedRun:
    """Wait for the batch's (only) line to run and send `min_events` events, send a chat (which
    pauses the line), and wait for the batch to complete, following the line's events."""

    def line_job() -> str | None:
        running = stack.redis.hgetall("hearth:running")
        return next(iter(running)).decode() if running else None

    wait_for(lambda: line_job() is not None, 60, "the line to start")
    line = line_job()
    assert line is not None
    followed: list[SseEvent] = []
    follower = threading.Thread(target=lambda: followed.extend(job_events(stack.base_url, line, timeout=240)))
    follower.start()
    wait_for(lambda: len(stack.redis.xrange(f"hearth:job:{line}:events")) > min_events, 60, "the line's first tokens")
    chat = client.chat.completions.with_raw_response.create(model="", messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
    assert chat.parse().choices[0].message.content is not None
    batch = wait_status(client, batch_id, ("completed",), 240)
    follower.join(60)
    return PausedRun(batch, followed, chat.headers["x-job-id"])
