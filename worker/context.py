"""Fit a conversation into the context window by leaving out its oldest whole turns.

The system prompt and the latest user message are never dropped. What is dropped is chosen in
steps of a quarter window rather than "just enough": as a chat grows turn by turn, the first
kept turn then stays the same for several turns, so the prompt keeps its prefix and the state
cache can skip the history instead of re-evaluating it after every trim.

Cost: the whole chat is counted once. How many turns to drop is first estimated from each
message's share of that count, then settled by exact counts of what would be kept (about a
window's worth each), so a chat of many thousands of messages is not re-counted per step.
"""

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from hearth.contract import Message
from hearth.documents import Citation
from hearth.trimming import MIN_ANSWER, never_dropped


@dataclass(frozen=True)
class Counted:
    tokens: list[int]  # the prompt
    shares: list[int]  # per message, about the tokens it adds (its text and template): estimates only


Count = Callable[[Sequence[Message]], Counted]


class ContextOverflow(Exception):
    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int, message: str | None = None):
        super().__init__(message or (
            f"This model's maximum context length is {n_ctx} tokens. However, the latest message "
            f"(with the system prompt) needs {prompt_tokens} tokens and {max_tokens} more are "
            f"reserved for the answer. Shorten the message or lower max_tokens."
        ))
        self.prompt_tokens, self.max_tokens, self.n_ctx = prompt_tokens, max_tokens, n_ctx


@dataclass(frozen=True)
class Plan:
    tokens: list[int]
    max_tokens: int
    dropped_messages: int = 0
    dropped_tokens: int = 0
    citations: tuple[Citation, ...] = ()  # the attached documents' text in the prompt (worker.documents_prompt)
    kept: tuple[int, ...] | None = None  # indexes of the messages kept, when some were dropped


def _turns(messages: Sequence[Message]) -> tuple[list[list[int]], list[int]]:
    """Indexes of droppable messages grouped in turns (a user message and what follows it up
    to the next one), and the indexes that are always kept."""
    kept = never_dropped([m.role for m in messages])
    always = set(kept)
    turns: list[list[int]] = []
    for i, m in enumerate(messages):
        if i in always:
            continue
        if m.role == "user" or not turns:
            turns.append([i])
        else:
            turns[-1].append(i)
    return turns, kept


def _fewest(enough: Callable[[int], bool], guess: int, most: int) -> int:
    """The least k in 1..most with enough(k), or most if none; enough grows with k. Gallops
    from `guess` to bracket the answer, then bisects: few calls when the guess is close."""
    guess = min(max(guess, 1), most)
    step = 1
    if enough(guess):
        low, high = guess - 1, guess  # enough(high); low == 0 or not enough(low)
        while low >= 1 and enough(low):
            high, low, step = low, max(low - 2 * step, 0), 2 * step
    else:
        low, high = guess, guess + 1
        while high <= most and not enough(high):
            low, high, step = high, high + 2 * step, 2 * step
        if high > most:
            high = most
            if low >= most:
                return most
    while high - low > 1:
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return high


def reserved(max_tokens: int | None, default_max_tokens: int, n_ctx: int) -> int:
    """The answer's room a prompt leaves: an explicit `max_tokens`, or up to
    `default_max_tokens` (at most half the window)."""
    return max_tokens or min(default_max_tokens, n_ctx // 2)


def plan(messages: Sequence[Message], max_tokens: int | None, default_max_tokens: int, n_ctx: int, count: Count) -> Plan:
    """The prompt to run and its answer budget.

    An explicit `max_tokens` must fit beside the prompt; without one, room for up to
    `default_max_tokens` (at most half the window) is made, then the budget is clamped to
    what is left.
    """
    reserve = reserved(max_tokens, default_max_tokens, n_ctx)
    full = count(messages)
    if len(full.tokens) + reserve <= n_ctx:
        return Plan(full.tokens, max_tokens or min(default_max_tokens, n_ctx - len(full.tokens)))

    turns, kept = _turns(messages)

    def without_oldest(k: int) -> list[int]:
        return sorted(kept + [i for turn in turns[k:] for i in turn])

    def saves_enough(k: int) -> bool:
        return len(full.tokens) - len(count([messages[i] for i in without_oldest(k)]).tokens) >= target

    quantum = max(n_ctx // 4, 1)
    target = math.ceil((len(full.tokens) + reserve - n_ctx) / quantum) * quantum
    # The fewest oldest turns whose removal saves `target` tokens, by exact counts near the
    # estimate: savings grow with every turn dropped.
    estimated = list(accumulate(sum(full.shares[i] for i in turn) for turn in turns))
    drop = _fewest(saves_enough, bisect_left(estimated, target) + 1, len(turns)) if turns else 0
    keep = without_oldest(drop)
    tokens = count([messages[i] for i in keep]).tokens
    room = n_ctx - len(tokens)
    needed = max_tokens or min(default_max_tokens, MIN_ANSWER)
    if room < needed:
        raise ContextOverflow(len(tokens), needed, n_ctx)
    return Plan(
        tokens,
        max_tokens or min(default_max_tokens, room),
        dropped_messages=len(messages) - len(keep),
        dropped_tokens=len(full.tokens) - len(tokens),
        kept=tuple(keep),
    )
