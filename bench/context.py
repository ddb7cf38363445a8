"""Interleaved users: three conversations growing turn by turn, alternating on one worker,
with the worker's state cache on and then off (STATE_CACHE_MB=0, STATE_DISK_MB=0).

With the cache, each turn should evaluate about the size of its new message whatever the
history; without it, the other conversations overwrote the model's state in between, so each
turn re-evaluates its whole history."""

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from bench.report import median, table
from bench.rig import Rig
from bench.timed_chat import ChatTiming, stream_chat

USERS = ("ada", "ben", "cy")
TOPICS = ("gardening", "bread baking", "bicycle repair")


@dataclass
class Turn:
    turn: int
    prompt: list[int]  # prompt tokens of each conversation's request
    evaluated: list[int]  # prompt tokens the worker had to evaluate (prompt - cached)
    ttft_ms: list[float]


async def _conversations(rig: Rig, keys: dict[str, str], turns: int, max_tokens: int, seed: int) -> list[Turn]:
    histories: dict[str, list[dict[str, Any]]] = {
        u: [{"role": "system", "content": f"You are a patient tutor on {topic}."}] for u, topic in zip(USERS, TOPICS)
    }
    ban = {str(t): b for t, b in rig.eog_ban.items()}
    result = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10)) as client:
        for turn in range(turns):
            timings: list[ChatTiming] = []
            for user in USERS:  # A, B, C, A, B, C, …: each evicts the others' state
                history = histories[user]
                history.append({"role": "user", "content": f"Question {turn + 1}: tell me one more practical tip, please."})
                body = {"model": "", "messages": list(history), "max_tokens": max_tokens, "seed": seed + turn, "logit_bias": ban}
                timing = await stream_chat(client, rig.base_url, keys[user], body)
                if not timing.ok:
                    raise RuntimeError(f"turn {turn + 1} of {user} failed: {timing.error}")
                timings.append(timing)
                history.append({"role": "assistant", "content": timing.text})
            result.append(Turn(
                turn + 1,
                [t.prompt_tokens for t in timings],
                [t.prompt_tokens - t.cached_tokens for t in timings],
                [1000 * (t.first_token - t.sent) for t in timings if t.first_token is not None],
            ))
    return result


@dataclass
class ContextResult:
    on: list[Turn]
    off: list[Turn]

    def render(self) -> str:
        rows = [
            [a.turn, round(median(a.prompt)), round(median(a.evaluated)), f"{median(a.ttft_ms):.0f}",
             round(median(b.evaluated)), f"{median(b.ttft_ms):.0f}"]
            for a, b in zip(self.on, self.off)
        ]
        last_on, last_off = self.on[-1], self.off[-1]
        notes = [
            f"last turn: cache on evaluates {median(last_on.evaluated):.0f} of {median(last_on.prompt):.0f} prompt tokens, "
            f"cache off {median(last_off.evaluated):.0f}",
            "target: with the cache, evaluated tokens per turn stay about the size of the new message (they do not "
            "grow with the history)",
        ]
        return table(
            f"context: {len(USERS)} interleaved conversations, medians over them per turn",
            ["turn", "prompt tok", "evaluated (cache on)", "TTFT ms (on)", "evaluated (cache off)", "TTFT ms (off)"],
            rows, notes,
        )


def run(rig: Rig, turns: int, max_tokens: int, seed: int) -> ContextResult:
    keys = rig.api_keys(list(USERS))
    rig.swap_worker()  # a fresh worker: no state from the cases before
    on = asyncio.run(_conversations(rig, keys, turns, max_tokens, seed))
    rig.swap_worker(STATE_CACHE_MB="0", STATE_DISK_MB="0")
    off = asyncio.run(_conversations(rig, keys, turns, max_tokens, seed))
    rig.swap_worker()
    return ContextResult(on, off)
