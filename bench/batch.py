"""The batch case: N lines through the Batches API against the same prompts generated one after
another in-process (lines/hour of both, and their ratio), and the first-token latency of a chat
sent mid-batch against one sent to an idle Hearth."""

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import openai

from api.chat.schemas import ChatCompletionRequest
from bench.report import median, table, verdict
from bench.rig import Rig

log = logging.getLogger(__name__)

RATIO_TARGET = 0.97  # a batch streams to nobody: nearly all the machine goes to the model
BENCH_USER = "bench-batch"
PROMPTS = ["Summarise the water cycle.", "Describe a lighthouse.", "Explain how bread rises.",
           "Write about autumn leaves.", "Tell me about the moon.", "Describe a busy market."]
CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}


def line_body(rig: Rig, i: int, tokens: int, seed: int) -> dict[str, Any]:
    return {"model": "", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": tokens,
            "seed": seed + i, "logit_bias": {str(t): b for t, b in rig.eog_ban.items()}}


@dataclass
class BatchResult:
    lines: int
    tokens: int
    local_s: float
    stack_s: float
    idle_ttft_ms: list[float]
    busy_ttft_ms: list[float]
    status: str

    def render(self) -> str:
        local, stack = 3600 * self.lines / self.local_s, 3600 * self.lines / self.stack_s
        ratio = stack / local
        idle, busy = median(self.idle_ttft_ms), median(self.busy_ttft_ms)
        return table(
            f"batch: {self.lines} lines of {self.tokens} tokens (end tokens banned), through /v1/batches "
            "against the same prompts one after another in-process",
            ["side", "seconds", "lines/hour"],
            [["in-process (Engine)", f"{self.local_s:.1f}", f"{local:.0f}"],
             [f"batch ({self.status})", f"{self.stack_s:.1f}", f"{stack:.0f}"]],
            [f"ratio batch/in-process: {ratio:.3f}   target >= {RATIO_TARGET}   {verdict(ratio >= RATIO_TARGET)}",
             f"chat TTFT, idle Hearth: {idle:.0f} ms; sent mid-batch (pauses a line): {busy:.0f} ms "
             f"(medians of {len(self.idle_ttft_ms)} and {len(self.busy_ttft_ms)}; includes the batch line giving way)"],
        )


def chat_ttft_ms(client: openai.OpenAI) -> float:
    start = time.perf_counter()
    for chunk in client.chat.completions.create(model="", stream=True, **CHAT):  # type: ignore[call-overload]  # openai's overloads cannot see into a dict
        if chunk.choices and chunk.choices[0].delta.content:
            return 1000 * (time.perf_counter() - start)
    return float("nan")


def in_process_s(rig: Rig, bodies: list[dict[str, Any]]) -> float:
    engine = rig.engine
    start = time.perf_counter()
    for body in bodies:
        request = ChatCompletionRequest.model_validate(body)
        params = request.sampling()
        fitted = engine.prompter.plan(request.contract_messages(), params.max_tokens)
        engine.generate(fitted.tokens, fitted.max_tokens, params, lambda _t, _n: None, threading.Event(),
                        time.monotonic() + engine.settings.job_timeout_s)
    return time.perf_counter() - start


def run(rig: Rig, lines: int, tokens: int, seed: int, chats: int = 3) -> BatchResult:
    bodies = [line_body(rig, i, tokens, seed) for i in range(lines)]
    key = rig.api_keys([BENCH_USER])[BENCH_USER]
    client = openai.OpenAI(base_url=rig.base_url, api_key=key, max_retries=0, timeout=600)
    try:
        log.info("batch: chats on an idle Hearth")
        idle = [chat_ttft_ms(client) for _ in range(chats)]
        log.info("batch: %d lines in-process", lines)
        local_s = in_process_s(rig, bodies)
        rig.settle()
        data = "".join(json.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/chat/completions", "body": b}) + "\n"
                       for i, b in enumerate(bodies)).encode()
        log.info("batch: %d lines through the Batches API", lines)
        start = time.perf_counter()
        uploaded = client.files.create(file=("bench.jsonl", data), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.1)  # a fine poll: its wait counts against the batch
            batch = client.batches.retrieve(batch.id)
        stack_s = time.perf_counter() - start
        log.info("batch: chats sent mid-batch")
        busy = _busy_ttfts(rig, client, bodies, chats)
    finally:
        client.close()
    return BatchResult(lines, tokens, local_s, stack_s, idle, busy, batch.status)


def _busy_ttfts(rig: Rig, client: openai.OpenAI, bodies: list[dict[str, Any]], chats: int) -> list[float]:
    """A second batch (not timed) keeps a line generating while each chat arrives."""
    data = "".join(json.dumps({"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions", "body": b}) + "\n"
                   for i, b in enumerate(bodies)).encode()
    uploaded = client.files.create(file=("busy.jsonl", data), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    busy = []
    for _ in range(chats):
        deadline = time.monotonic() + 60
        while not rig.redis.hlen("hearth:running") and time.monotonic() < deadline:
            time.sleep(0.02)  # until a line runs (again, after the last chat)
        busy.append(chat_ttft_ms(client))
    client.batches.cancel(batch.id)
    return busy
