"""Model state (KV cache) of recent conversations, so a returning one skips its history.

One worker serves several people whose chats interleave; llama.cpp keeps the state of only
one token sequence. Before a job would overwrite the live state, that state is copied out
(only the sequence's KV: a few tens of KB per token, not the whole context), keyed by its
tokens; a job whose prompt extends a saved sequence further than the live one gets it copied
back. Least recently used entries go first when the byte budget is exceeded.

Saving happens only when the live state is about to be replaced, so one person chatting
alone never pays for a copy.
"""

import ctypes
import logging
from collections import OrderedDict

import llama_cpp
from llama_cpp import Llama

log = logging.getLogger(__name__)

SEQ = 0  # llama-cpp-python runs everything as sequence 0
MIN_TOKENS = 32  # shorter states are cheaper to recompute than to keep


def common_prefix(a: tuple[int, ...] | list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class StateCache:
    def __init__(self, llama: Llama, budget_bytes: int):
        self._llama, self._budget = llama, budget_bytes
        self._entries: OrderedDict[tuple[int, ...], bytes] = OrderedDict()

    @property
    def size(self) -> int:
        return sum(len(v) for v in self._entries.values())

    def clear(self) -> None:
        self._entries.clear()

    def _live(self) -> tuple[int, ...]:
        return tuple(int(t) for t in self._llama.input_ids[: self._llama.n_tokens])

    def prepare(self, tokens: list[int]) -> None:
        """Make the live state the best available prefix of `tokens`."""
        if self._budget <= 0:
            return
        live = self._live()
        live_hit = common_prefix(live, tokens)
        if live_hit < len(live) and len(live) >= MIN_TOKENS:
            self._save(live)
        best = max(self._entries, key=lambda key: common_prefix(key, tokens), default=None)
        if best is not None and common_prefix(best, tokens) > live_hit:
            self._load(best)

    def _save(self, key: tuple[int, ...]) -> None:
        ctx = self._llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, SEQ)
        if size > self._budget:
            return
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, SEQ)
        # A longer conversation supersedes the saved states it extends.
        for old in [k for k in self._entries if k == key[: len(k)]]:
            del self._entries[old]
        self._entries[key] = bytes(buf)[:written]
        while self.size > self._budget:
            self._entries.popitem(last=False)
        log.debug("state cache: saved %d tokens (%d bytes, %d entries)", len(key), written, len(self._entries))

    def _load(self, key: tuple[int, ...]) -> None:
        data = self._entries[key]
        self._entries.move_to_end(key)
        llama = self._llama
        llama._ctx.kv_cache_clear()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, buf, len(data), SEQ) != len(data):
            llama.n_tokens = 0  # the live state is unusable: start from scratch
            return
        llama.input_ids[: len(key)] = key
        llama.n_tokens = len(key)
        log.debug("state cache: restored %d tokens", len(key))
