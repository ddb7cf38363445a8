"""A small SSE reader for tests that need event ids, names and comments (httpx, real HTTP)."""

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from devstack import Stack, wait_for


@dataclass
class Sse:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict:
        return json.loads(self.data)


def read_sse(response: httpx.Response) -> Iterator[Sse]:
    current = Sse()
    for line in response.iter_lines():
        if line == "":
            if current.data or current.comments or current.id:
                yield current
            current = Sse()
        elif line.startswith(":"):
            current.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                current.data = f"{current.data}\n{value}" if current.data else value
            elif name in ("event", "id"):
                setattr(current, name, value)
    if current.data:
        yield current


def job_events(base_url: str, job_id: str, last_event_id: str | None = None, timeout: float = 60,
               api_key: str | None = None) -> list[Sse]:
    """The job's events until its final one."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    events = []
    with httpx.stream("GET", f"{base_url}/jobs/{job_id}/events", headers=headers, timeout=timeout) as r:
        r.raise_for_status()
        for sse in read_sse(r):
            if sse.data:
                events.append(sse)
                if sse.event in ("done", "error"):
                    break
    return events


def stream_in_background(stack: Stack, body: dict, key: str | None = None) -> tuple[dict, threading.Event]:
    """POST a streaming chat from a thread; `out` fills with the job id, content and error;
    the event is set at the first content."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    out: dict = {"text": "", "error": None}
    started = threading.Event()

    def run() -> None:
        try:
            with httpx.stream("POST", f"{stack.base_url}/chat/completions", json={**body, "stream": True},
                              headers=headers, timeout=300) as r:
                out["id"] = r.headers["x-job-id"]
                for sse in read_sse(r):
                    if not sse.data or sse.data == "[DONE]":
                        continue
                    data = sse.json()
                    if "error" in data:
                        out["error"] = data["error"]
                    elif data["choices"] and data["choices"][0]["delta"].get("content"):
                        out["text"] += data["choices"][0]["delta"]["content"]
                        started.set()
        except httpx.TransportError as exc:  # the api went away under the stream
            out["transport_error"] = exc
        out["closed"] = True

    threading.Thread(target=run, daemon=True).start()
    wait_for(lambda: "id" in out, 30, "the job id")
    return out, started
