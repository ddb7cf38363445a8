"""`load`: N users chatting at once with the one worker.

Each simulated user holds a conversation: it sends a message, reads the streamed reply to
the end, appends it to its history and sends the next one, with no think time; all users
start together. Replies are `max_tokens` long (EOS banned) so every job is the same work.
Before the load, one user alone holds the same conversation: the single-stream rate that
the aggregate is compared with, measured in the same run the same way.
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from bench.report import percentile, table
from bench.rig import Rig
from bench.timed_chat import ChatTiming, stream_chat

log = logging.getLogger(__name__)

QUESTIONS = (
    "What is a good name for a grey cat?",
    "How do I keep bread fresh for longer?",
    "Explain what a heat pump does, simply.",
    "Suggest a board game for four players.",
    "Why is the sky blue?",
    "Give me a quick recipe with eggs and spinach.",
    "How often should I water a cactus?",
    "What should I pack for a weekend hike?",
)


async def _user(
    client: httpx.AsyncClient, rig: Rig, user: int, key: str, chats: int, max_tokens: int, seed: int
) -> list[ChatTiming]:
    ban = {str(t): b for t, b in rig.eog_ban.items()}
    history: list[dict[str, Any]] = []
    timings: list[ChatTiming] = []
    for i in range(chats):
        history.append({"role": "user", "content": QUESTIONS[(user + i) % len(QUESTIONS)]})
        body = {"model": "", "messages": list(history), "max_tokens": max_tokens, "seed": seed + 1000 * user + i,
                "logit_bias": ban}
        timing = await stream_chat(client, rig.base_url, key, body)
        timings.append(timing)
        history.append({"role": "assistant", "content": timing.text})
    return timings


async def _session(rig: Rig, keys: list[str], chats: int, max_tokens: int, seed: int) -> list[ChatTiming]:
    limits = httpx.Limits(max_connections=len(keys) + 4, max_keepalive_connections=len(keys) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10), limits=limits) as client:
        per_user = await asyncio.gather(*(_user(client, rig, u, key, chats, max_tokens, seed) for u, key in enumerate(keys)))
    return [t for timings in per_user for t in timings]


def _aggregate_tps(timings: list[ChatTiming]) -> float:
    ok = [t for t in timings if t.ok and t.done is not None]
    if not ok:
        return float("nan")
    wall = max(t.done for t in ok if t.done is not None) - min(t.sent for t in timings)
    return sum(t.completion_tokens for t in ok) / wall


@dataclass(frozen=True)
class LoadResult:
    users: int
    chats: int
    max_tokens: int
    single: list[ChatTiming]
    load: list[ChatTiming]

    @property
    def completed(self) -> int:
        return sum(t.ok for t in self.load)

    @property
    def failed(self) -> int:
        return len(self.load) - self.completed

    def render(self) -> str:
        def ms(values: list[float], q: float) -> str:
            return f"{1000 * percentile(values, q):.0f}"

        def row(name: str, timings: list[ChatTiming]) -> list[object]:
            ok = [t for t in timings if t.ok]
            queue = [t.started - t.sent for t in ok if t.started is not None]
            ttft = [t.first_token - t.sent for t in ok if t.first_token is not None]
            return [name, f"{sum(t.ok for t in timings)}/{len(timings) - sum(t.ok for t in timings)}",
                    ms(queue, 50), ms(queue, 95), ms(ttft, 50), ms(ttft, 95),
                    max((t.max_position for t in timings), default=0), f"{_aggregate_tps(timings):.1f}"]

        single, aggregate = _aggregate_tps(self.single), _aggregate_tps(self.load)
        errors = sorted({t.error for t in self.load if t.error})
        return table(
            f"load: {self.users} users x {self.chats} chats each (a conversation, sent as soon as the last reply "
            f"ends), {self.max_tokens} tokens per reply, one worker",
            ["run", "completed/failed", "queue p50 ms", "queue p95 ms", "TTFT p50 ms", "TTFT p95 ms",
             "max position", "completion tok/s"],
            [row("1 user alone", self.single), row(f"{self.users} users at once", self.load)],
            [
                f"aggregate/single-stream tok/s: {aggregate / single:.3f}   (one worker: ~1.0 expected)",
                "queue = request sent -> its `started` comment; TTFT = request sent -> first content; "
                "tok/s = completion tokens / (first request -> last [DONE])",
                *([f"errors: {', '.join(errors)}"] if errors else []),
            ],
        )


def run(rig: Rig, users: int, chats: int, max_tokens: int, seed: int) -> LoadResult:
    """Every simulated user is its own account: the api queues fairly by account."""
    names = [f"load-{u}" for u in range(users)]
    keys = rig.api_keys(["load-alone", *names])
    log.info("load: 1 user x %d chats alone", chats)
    single = asyncio.run(_session(rig, [keys["load-alone"]], chats, max_tokens, seed))
    rig.settle()
    log.info("load: %d users x %d chats", users, chats)
    load = asyncio.run(_session(rig, [keys[n] for n in names], chats, max_tokens, seed))
    return LoadResult(users, chats, max_tokens, single, load)
