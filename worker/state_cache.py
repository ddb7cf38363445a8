"""Model state (KV cache) of recent conversations, so a returning one skips its history.

One worker serves several people whose chats interleave; llama.cpp keeps the state of only
one token sequence. Before a job would overwrite the live state, that state is copied out
(only the sequence's KV: a few tens of KB per token, not the whole context) into memory,
keyed by its tokens. After each chat the live state is copied out at once, into memory and
to disk (worker.state_disk, written in the background), where it outlives the worker and
this model's unloading. A job
whose prompt shares a longer prefix with a saved sequence than with the live one gets the
best of them copied back, from memory if it holds as much, else from disk. Least recently
used entries go first when a tier's byte budget is exceeded.

A saved sequence serves any prompt that starts like it, not only its continuations: many
conversations that open with the same system prompt all restore it from whichever of them
was saved.

Each entry carries the route keys it serves (worker.route_keys): the one its job's answer named
this worker holder of, and those of the entries it superseded.
"""

import ctypes
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import llama_cpp
import numpy as np
from llama_cpp import Llama

from worker.route_keys import RouteKeys
from worker.state_disk import StateDisk, common_prefix

log = logging.getLogger(__name__)

SEQ = 0  # llama-cpp-python runs everything as sequence 0
MIN_TOKENS = 32  # shorter states are cheaper to recompute than to keep

# Where a job's prompt prefix came from: the state the model held (`live`), one restored from
# `memory` or `disk`, or `none` (fewer than MIN_TOKENS reused: a miss).
Source = Literal["live", "memory", "disk", "none"]


class StateCache:
    def __init__(self, llama: Llama, budget_bytes: int, model: bytes, disk: StateDisk | None, routes: RouteKeys | None):
        self._llama, self._budget, self._model, self._disk, self._routes = llama, budget_bytes, model, disk, routes
        self._entries: OrderedDict[bytes, tuple[np.ndarray, bytes, frozenset[str]]] = OrderedDict()  # tokens' bytes -> (tokens, state, routes)
        self._live_routes: frozenset[str] = frozenset()  # those the live state serves, which `keep` was told
        self.size = 0  # bytes held; kept as a number, which the heartbeat's thread reads

    def clear(self) -> None:
        routes = [r for _, _, rs in self._entries.values() for r in rs]
        self._entries.clear()
        self.size = 0
        self._release(routes)

    def _live(self) -> np.ndarray:
        return np.array(self._llama.input_ids[: self._llama.n_tokens], dtype=np.int32)

    def prepare(self, prompt: list[int]) -> Source:
        """Make the live state the best available prefix of `prompt`."""
        tokens = np.array(prompt, dtype=np.int32)
        live = self._live()
        live_hit = common_prefix(live, tokens)
        if live_hit < len(live):  # the live state is about to change: kept in memory first, with its routes
            if self._budget > 0 and len(live) >= MIN_TOKENS and live.tobytes() not in self._entries:
                self._put(live, self._copy(), self._live_routes)
            self._live_routes = frozenset()
        memory_key, memory_hit = max(((key, common_prefix(held, tokens)) for key, (held, _, _) in self._entries.items()),
                                     key=lambda x: x[1], default=(b"", 0))
        disk_name, disk_hit = self._disk.best(self._model, tokens) if self._disk else ("", 0)
        # The longest first; memory first when it holds as much (no disk read).
        tries: list[tuple[int, Source, Callable[[], bool]]] = [
            (memory_hit, "memory", lambda: self._restore_memory(memory_key)),
            (disk_hit, "disk", lambda: self._restore_disk(disk_name)),
        ]
        for hit, source, restore in sorted(tries, key=lambda t: -t[0]):
            if hit > live_hit and hit >= MIN_TOKENS and restore():
                return source
        live_hit = common_prefix(self._live(), tokens)  # a refused restore leaves nothing live
        return "live" if live_hit >= MIN_TOKENS else "none"

    def keeps(self, tokens: int) -> bool:
        """Whether a sequence of `tokens` is kept after its job, for a later one to restore."""
        return tokens >= MIN_TOKENS and (self._disk is not None or self._budget > 0)

    def keep(self, route: str | None) -> None:
        """After a job: the live state to disk, in the background, unless it is there already;
        `route` names the key the job's answer wrote for it (hearth.state_routes), if any."""
        if route:  # with those of the live state it extends; for memory, when the next job replaces it
            self._live_routes |= {route}
        live = self._live()
        if self._disk is not None and len(live) >= MIN_TOKENS and not self._disk.holds(self._model, live):
            data = self._copy()
            self._disk.save(self._model, live, self._live_routes, data)
            self._put(live, data, self._live_routes)  # the same bytes: the next job that replaces it need not copy it again

    def _copy(self) -> bytes:
        ctx = self._llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, SEQ)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, SEQ)
        return ctypes.string_at(buf, written)

    def _put(self, key: np.ndarray, data: bytes, routes: frozenset[str]) -> None:
        if len(data) > self._budget:
            if self._routes is not None:
                self._routes.check(routes)  # unless the disk took it, no tier serves them
            return
        # A longer conversation supersedes the saved states it extends (and serves their routes).
        superseded = [self._entries.pop(k) for k in [k for k, (held, _, _) in self._entries.items()
                                                     if len(held) <= len(key) and common_prefix(held, key) == len(held)]]
        routes = routes.union(*(rs for _, _, rs in superseded))
        if self._routes is not None:
            self._routes.hold(routes)
        self._entries[key.tobytes()] = (key, data, routes)
        self.size += len(data) - sum(len(d) for _, d, _ in superseded)
        gone = [r for _, _, rs in superseded for r in rs]
        while self.size > self._budget:
            _, (_, old, rs) = self._entries.popitem(last=False)
            self.size -= len(old)
            gone += rs
        self._release(gone)
        log.debug("state cache: saved %d tokens (%d bytes, %d entries)", len(key), len(data), len(self._entries))

    def _release(self, routes: list[str]) -> None:
        if self._routes is not None:
            self._routes.release(routes)

    def _restore_memory(self, key: bytes) -> bool:
        self._entries.move_to_end(key)
        tokens, data, _ = self._entries[key]
        return self._set(tokens, data, "memory", time.monotonic())

    def _restore_disk(self, name: str) -> bool:
        assert self._disk is not None
        started = time.monotonic()
        loaded = self._disk.load(name, self._model)
        return loaded is not None and self._set(*loaded, "disk", started)

    def _set(self, tokens: np.ndarray, data: bytes, source: str, started: float) -> bool:
        llama = self._llama
        llama._ctx.kv_cache_clear()
        buf = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))  # `data` itself: a copy costs as much as the restore
        if len(tokens) > llama.n_ctx() or llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, buf, len(data), SEQ) != len(data):
            llama._ctx.kv_cache_clear()
            llama.n_tokens = 0  # the live state is unusable: start from scratch
            self._live_routes = frozenset()
            log.warning("saved state refused by llama.cpp", extra={"source": source, "tokens": len(tokens)})
            return False
        llama.input_ids[: len(tokens)] = tokens
        llama.n_tokens = len(tokens)
        llama._requires_eval = True  # the logits are not the restored sequence's: evaluate again before sampling
        log.info("state restored", extra={"source": source, "tokens": len(tokens), "bytes": len(data),
                                          "restore_s": round(time.monotonic() - started, 3)})
        return True
