"""`idle`: what a Hearth with nothing to do costs, and, beside it, how fast it answers when work
arrives, so that idleness is never bought with latency.

The whole stack (redis-server, worker, api and the ui) is left alone for a while; each
process's CPU time over that span (utime + stime of all its threads, from /proc) is its
share of one core. Then, after a pause that lets every process fall back into its wait, a
chat and a one-line batch arrive, cut at the timestamps Redis keeps: the chat's trip through
the api into the queue and from the queue into a worker, the batch's first line queued after
the batch was created, and the batch completed after its last line ended.
"""

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import openai
from rq.job import Job

from bench.report import median, table, verdict
from bench.rig import Rig
from bench.stream import ttft_phases, utc_seconds
from devstack import UiServer
from hearth.contract import RQ_SERIALIZER

log = logging.getLogger(__name__)

TARGET_PERCENT = 1.0  # the whole stack, idle, in % of one core
SETTLE_S = 5.0  # after the ui is up: start-up work (first heartbeats, the housekeeping lease) is done
PAUSE_S = 2.0  # before each request: every process is back in its wait
POLL_S = 0.01  # how often the batch's status is read while it runs
BENCH_USER = "bench-idle"
CHAT = {"model": "", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 1}
# The api's and the pickup's share of a chat's start, as `stream` cuts it.
CHAT_PHASES = {"api": "chat: request sent -> queued (RQ enqueued_at)", "pickup": "chat: queued -> a worker started it"}
BATCH_PHASES = {"start": "batch: created -> its line queued", "end": f"batch: its line ended -> completed (read every {POLL_S * 1000:.0f} ms)"}


@dataclass(frozen=True)
class IdleResult:
    seconds: float
    cpu_s: dict[str, float]  # CPU seconds each process used while idle
    latency_ms: dict[str, list[float]]  # per phase of CHAT_PHASES and BATCH_PHASES, one value per request

    def percent(self, cpu_s: float) -> float:
        return 100 * cpu_s / self.seconds

    def render(self) -> str:
        total = sum(self.cpu_s.values())
        rows = [[name, f"{used:.2f}", f"{self.percent(used):.2f}"] for name, used in self.cpu_s.items()]
        cpu = table(
            f"idle: CPU of each process over {self.seconds:.0f} s without traffic, {SETTLE_S:.0f} s after start "
            "(/proc, 10 ms ticks)",
            ["process", "CPU s", "% of one core"],
            [*rows, ["total", f"{total:.2f}", f"{self.percent(total):.2f}"]],
            [f"idle stack: {self.percent(total):.2f} % of one core   target <= {TARGET_PERCENT:.0f} %   "
             f"{verdict(self.percent(total) <= TARGET_PERCENT)}"],
        )
        what = {**CHAT_PHASES, **BATCH_PHASES}
        latency = table(
            f"how fast work starts on the idle stack, each request after {PAUSE_S:.0f} s of quiet "
            "(Redis timestamps, 1 ms resolution)",
            ["phase", "median ms", "each"],
            [[what[name], f"{median(values):.1f}", " ".join(f"{v:.0f}" for v in values)] for name, values in self.latency_ms.items()],
            align="lrl",
        )
        return f"{cpu}\n\n{latency}"


def chat_start_ms(rig: Rig, client: openai.OpenAI) -> dict[str, float]:
    job_id, sent = "", time.time()
    first = 0.0
    for chunk in client.chat.completions.create(stream=True, **CHAT):  # type: ignore[call-overload]  # openai's overloads cannot see into a dict
        job_id = chunk.id.removeprefix("chatcmpl-")
        if chunk.choices and chunk.choices[0].delta.content and not first:
            first = time.time()
    rig.wait_idle(job_id)
    phases = ttft_phases(rig, job_id, sent, first)
    return {name: phases[name] for name in CHAT_PHASES}


def batch_ms(rig: Rig, client: openai.OpenAI) -> dict[str, float]:
    line = {"custom_id": "idle", "method": "POST", "url": "/v1/chat/completions", "body": CHAT}
    uploaded = client.files.create(file=("idle.jsonl", json.dumps(line).encode() + b"\n"), purpose="batch")
    sent = time.time()
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(POLL_S)
        batch = client.batches.retrieve(batch.id)
    seen = time.time()
    assert batch.status == "completed" and batch.output_file_id, f"the batch ended {batch.status}"
    answer: dict[str, Any] = json.loads(client.files.content(batch.output_file_id).text)
    job = Job.fetch(answer["response"]["request_id"], connection=rig.redis, serializer=RQ_SERIALIZER)
    return {"start": 1000 * (utc_seconds(job.enqueued_at) - sent), "end": 1000 * (seen - utc_seconds(job.ended_at))}


def run(rig: Rig, seconds: float, requests: int) -> IdleResult:
    ui = UiServer(rig.stack.env, rig.log_dir)
    try:
        pids = {**{name: pid for name, pid in rig.pids().items() if name != "bench"}, "ui": ui.proc.popen.pid}
        log.info("idle: settling for %.0f s, then %.0f s without traffic", SETTLE_S, seconds)
        time.sleep(SETTLE_S)
        before, start = rig.cpu_seconds(pids), time.monotonic()
        time.sleep(seconds)
        after, elapsed = rig.cpu_seconds(pids), time.monotonic() - start
    finally:
        ui.stop()
    key = rig.api_keys([BENCH_USER])[BENCH_USER]
    client = openai.OpenAI(base_url=rig.base_url, api_key=key, max_retries=0, timeout=120)
    latency: dict[str, list[float]] = {name: [] for name in {**CHAT_PHASES, **BATCH_PHASES}}
    try:
        for i in range(requests):
            log.info("idle: request %d/%d after %.0f s of quiet", i + 1, requests, PAUSE_S)
            time.sleep(PAUSE_S)
            for name, ms in chat_start_ms(rig, client).items():
                latency[name].append(ms)
            time.sleep(PAUSE_S)
            for name, ms in batch_ms(rig, client).items():
                latency[name].append(ms)
    finally:
        client.close()
    return IdleResult(elapsed, {name: after[name] - before[name] for name in pids}, latency)
