"""`states`: a long conversation's next turn, with its history's model state (a) in the
worker's memory, (b) on disk after the worker restarted, (c) on disk after its model was
swapped out for another and back, (d) on the disk of one of two workers (the other free and
first in line: the turn is routed to the holder), and (e) nowhere (the history evaluated in full). First-token time and cached tokens
of each, and the worker's own times and sizes of the saves and restores.

One worker serves the bench's model and the small `mistral-tiny` (the other model of (c)),
a budget for one of them; (d) adds a second worker of them with a disk of its own. The history
is evaluated once, in (e); every other turn extends the one before, so each restores the
previous turn's state."""

import asyncio
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.report import median, table, verdict
from bench.rig import Rig, end_tokens
from bench.timed_chat import ChatTiming, stream_chat
from devstack import Process, wait_for
from hearth.contract import Message, worker_key
from tools.shaped_gguf import cached_shaped_gguf
from worker.models import load_vocab
from worker.prompter import Prompter

log = logging.getLogger(__name__)

BENCH_USER = "bench-states"
OTHER = "mistral-tiny"
ANSWER_TOKENS = 4
SYSTEM = "You are Hearthy, the household's patient assistant. Answer in one or two short sentences."
TOPICS = ("the garden", "the bicycle", "bread", "the holidays", "the cat", "the roof", "school", "the budget")
GOAL_AFTER_A_S = 2.0  # (b), (c), (d): within this of (a)
GOAL_FRACTION_OF_E = 1 / 20  # and at most this share of (e)


def history(path: Path, n_ctx: int, tokens: int) -> list[dict[str, str]]:
    """A made-up conversation of about `tokens` prompt tokens (counted with the model's own template)."""
    prompter = Prompter(load_vocab(str(path)), n_ctx, 16)
    messages = [{"role": "system", "content": SYSTEM}]
    turn = 0
    while len(prompter.tokens([Message(**m) for m in messages])) < tokens:
        topic = TOPICS[turn % len(TOPICS)]
        messages += [{"role": "user", "content": f"Question {turn}: what should we do about {topic} this week, and why?"},
                     {"role": "assistant", "content": f"For {topic}, start early on day {turn % 7 + 1}, keep notes, "
                                                      f"ask everyone once, and check again after {turn % 5 + 2} days."}]
        turn += 1
    return messages


@dataclass(frozen=True)
class Case:
    label: str
    timing: ChatTiming

    @property
    def ttft_s(self) -> float:
        assert self.timing.first_token is not None
        return self.timing.first_token - self.timing.sent


@dataclass
class StatesResult:
    model: str
    history_tokens: int
    cases: list[Case]
    restores: list[dict[str, Any]]  # the workers' `state restored` lines
    saves: list[dict[str, Any]]  # and `state saved`

    def render(self) -> str:
        by = {c.label[0]: c for c in self.cases}
        rows = [[c.label, f"{1000 * c.ttft_s:.0f}", c.timing.prompt_tokens, c.timing.cached_tokens] for c in self.cases]
        notes = []
        for key in "bcd":
            case = by[key]
            near = case.ttft_s - by["a"].ttft_s <= GOAL_AFTER_A_S
            share = case.ttft_s / by["e"].ttft_s
            notes.append(f"({key}) vs (a): {case.ttft_s - by['a'].ttft_s:+.2f} s (goal <= {GOAL_AFTER_A_S:.0f} s) "
                         f"{verdict(near)}; vs (e): {share:.3f} (goal <= {GOAL_FRACTION_OF_E:.3f}) {verdict(share <= GOAL_FRACTION_OF_E)}")
        for kind, lines, seconds in (("restores", self.restores, "restore_s"), ("saves to disk", self.saves, "save_s")):
            if lines:
                notes.append(f"{kind} (worker logs, {len(lines)}): median {median([line['bytes'] for line in lines]) / 2**20:.1f} MiB "
                             f"for {median([line['tokens'] for line in lines]):.0f} tokens, {1000 * median([line[seconds] for line in lines]):.0f} ms")
        return table(
            f"states: the next turn of a {self.history_tokens}-token conversation with {self.model}, "
            f"{ANSWER_TOKENS} answer tokens, temperature 0",
            ["where its history's state was", "TTFT ms", "prompt tok", "cached tok"], rows, notes,
        )


def _lines(worker: Process, message: str) -> list[dict[str, Any]]:
    out = []
    for raw in worker.log().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("msg") == message:
            out.append(line)
    return out


def run(rig: Rig, history_tokens: int, seed: int) -> StatesResult:
    main, other = Path(rig.settings.model_path), cached_shaped_gguf(OTHER)
    messages = history(main, rig.settings.n_ctx or 8192, history_tokens)
    models = {"unset": ("MODEL_PATH", "MODEL_NAME"), "MODELS": f"{main},{other}", "MODEL_MEMORY_BUDGET_MB": "0"}
    key = rig.api_keys([BENCH_USER])[BENCH_USER]
    ban = {str(t): b for t, b in end_tokens(str(main)).items()}
    workers: list[Process] = []

    def worker(keep_states: bool) -> None:
        rig.swap_worker(keep_states=keep_states, unset=models["unset"], MODELS=str(models["MODELS"]),
                        MODEL_MEMORY_BUDGET_MB=str(models["MODEL_MEMORY_BUDGET_MB"]))
        workers.append(rig.stack.workers[0])

    async def ask(model: str, chat: list[dict[str, str]], tokens: int = ANSWER_TOKENS) -> ChatTiming:
        body = {"model": model, "messages": chat, "max_tokens": tokens, "temperature": 0.0, "seed": seed,
                **({"logit_bias": ban} if model == main.stem else {})}
        async with httpx.AsyncClient(timeout=httpx.Timeout(1800, connect=10)) as client:
            timing = await stream_chat(client, rig.base_url, key, body)
        if not timing.ok or timing.first_token is None:
            raise RuntimeError(f"a states turn failed: {timing.error}")
        return timing

    def turn(label: str) -> Case:
        """The conversation's next turn: its last answer and a new question added."""
        messages.append({"role": "user", "content": f"Thank you. One more thing about {TOPICS[len(messages) % len(TOPICS)]}?"})
        timing = asyncio.run(ask(main.stem, list(messages)))
        messages.append({"role": "assistant", "content": timing.text})
        log.info("states: %s: first token after %.2f s, %d of %d prompt tokens cached", label,
                 timing.first_token - timing.sent if timing.first_token else -1, timing.cached_tokens, timing.prompt_tokens)
        return Case(label, timing)

    log.info("states: %d-token history with %s", history_tokens, main.name)
    worker(keep_states=False)
    cases = [turn("e) nothing saved")]
    # Another conversation moves this one's live state to the memory cache.
    asyncio.run(ask(main.stem, [{"role": "system", "content": SYSTEM.upper()}, {"role": "user", "content": "Hello there, how are you?"}]))
    cases.append(turn("a) in the worker's memory"))
    asyncio.run(ask(other.stem, [{"role": "user", "content": "Hi"}], 2))  # swaps the model out, and its memory cache with it
    cases.append(turn("c) on disk, after a swap away and back"))
    worker(keep_states=True)
    cases.append(turn("b) on disk, after a worker restart"))
    # A second worker of the model with its own, empty disk, as on another machine. Free, and
    # waiting longest, it would take the turn; it goes to the worker holding its state instead
    # (api.jobs.state_routing), once that one has measured its prefill speed.
    holder = rig.stack.workers[0]
    with tempfile.TemporaryDirectory(prefix="hearth-bench-states-") as own:
        second = rig.stack.start_worker(unset=models["unset"], MODELS=str(models["MODELS"]),
                                        MODEL_MEMORY_BUDGET_MB=str(models["MODEL_MEMORY_BUDGET_MB"]), STATE_DIR=own)
        workers.append(second)
        wait_for(lambda: json.loads(rig.redis.hget(worker_key(holder.env["WORKER_NAME"]), "prefill_tps") or b"0") > 0, 30,
                 "the holder's prefill speed", holder)
        cases.append(turn("d) on the other of two workers, routed to it"))
        second.stop()
        rig.stack.workers.remove(second)
    rig.swap_worker()  # the bench's own worker again, for the cases after
    cases.sort(key=lambda c: c.label)
    return StatesResult(main.stem, history_tokens, cases,
                        [line for w in workers for line in _lines(w, "state restored")],
                        [line for w in workers for line in _lines(w, "state saved")])
