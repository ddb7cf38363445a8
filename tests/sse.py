"""Streams read in tests: a job's events, and a streaming chat followed from a thread (the SSE
wire format itself is read by hearth.sse)."""

import threading

import httpx

from devstack import Stack, wait_for
from hearth.sse import SseEvent, read_sse


def job_events(base_url: str, job_id: str, last_event_id: str | None = None, timeout: float = 60,
               api_key: str | None = None) -> list[SseEvent]:
    """The job's events until its final one."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    events = []
    with httpx.stream("GET", f"{base_url}/jobs/{job_id}/events", headers=headers, timeout=timeout) as r:
        r.raise_for_status()
        for sse in read_sse(r.iter_lines()):
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
                for sse in read_sse(r.iter_lines()):
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
