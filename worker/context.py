"""Fit a conversation into the context window by leaving out its oldest whole turns.

The system prompt and the latest user message are never dropped. What is dropped is chosen in
steps of a quarter window rather than "just enough": as a chat grows turn by turn, the first
kept turn then stays the same for several turns, so the prompt keeps its prefix and the state
cache can skip the history instead of re-evaluating it after every trim.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hearth.contract import Message

Count = Callable[[Sequence[Message]], list[int]]  # messages -> prompt tokens
MIN_ANSWER = 16  # without max_tokens, fewer free tokens than this is no room for an answer


class ContextOverflow(Exception):
    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int):
        super().__init__(
            f"This model's maximum context length is {n_ctx} tokens. However, the latest message "
            f"(with the system prompt) needs {prompt_tokens} tokens and {max_tokens} more are "
            f"reserved for the answer. Shorten the message or lower max_tokens."
        )
        self.prompt_tokens, self.max_tokens, self.n_ctx = prompt_tokens, max_tokens, n_ctx


@dataclass(frozen=True)
class Plan:
    tokens: list[int]
    max_tokens: int
    dropped_messages: int = 0
    dropped_tokens: int = 0


def _turns(messages: Sequence[Message]) -> tuple[list[list[int]], list[int]]:
    """Indexes of droppable messages grouped in turns (a user message and what follows it up
    to the next one), and the indexes that are always kept."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=len(messages) - 1)
    turns: list[list[int]] = []
    kept: list[int] = []
    for i, m in enumerate(messages):
        if m.role in ("system", "developer") or i >= last_user:
            kept.append(i)
        elif m.role == "user" or not turns:
            turns.append([i])
        else:
            turns[-1].append(i)
    return turns, kept


def plan(messages: Sequence[Message], max_tokens: int | None, default_max_tokens: int, n_ctx: int, count: Count) -> Plan:
    """The prompt to run and its answer budget.

    An explicit `max_tokens` must fit beside the prompt; without one, room for up to
    `default_max_tokens` (at most half the window) is made, then the budget is clamped to
    what is left.
    """
    reserve = max_tokens or min(default_max_tokens, n_ctx // 2)
    full = count(messages)
    if len(full) + reserve <= n_ctx:
        return Plan(full, max_tokens or min(default_max_tokens, n_ctx - len(full)))

    turns, kept = _turns(messages)

    def without_oldest(k: int) -> list[int]:
        return sorted(kept + [i for turn in turns[k:] for i in turn])

    quantum = max(n_ctx // 4, 1)
    target = math.ceil((len(full) + reserve - n_ctx) / quantum) * quantum
    # The fewest oldest turns whose removal saves `target` tokens, by bisection on exact
    # counts: savings grow with every turn dropped.
    low, high = 1, len(turns)
    while low < high:
        mid = (low + high) // 2
        if len(full) - len(count([messages[i] for i in without_oldest(mid)])) >= target:
            high = mid
        else:
            low = mid + 1
    keep = without_oldest(low)
    tokens = count([messages[i] for i in keep])
    room = n_ctx - len(tokens)
    needed = max_tokens or min(default_max_tokens, MIN_ANSWER)
    if room < needed:
        raise ContextOverflow(len(tokens), needed, n_ctx)
    return Plan(
        tokens,
        max_tokens or min(default_max_tokens, room),
        dropped_messages=len(messages) - len(keep),
        dropped_tokens=len(full) - len(tokens),
    )
