"""Saved model states on disk (`STATE_DIR`, bounded by `STATE_DISK_MB`): the tier under each
model's memory cache (worker.state_cache), which survives a restart of the worker and the
unloading of a model.

Each file holds one token sequence's state of one model (worker.state_file). The folder is
the truth: the index (each file's model and tokens) is rebuilt by reading the headers at
start and brought up to date before each lookup and eviction, so several workers on one
machine may share a folder, and each restores the others' states. Writes go through a background thread, a bounded queue of them: the job
that made a state never waits for the disk. A longer state of a conversation replaces the
shorter ones it extends (restoring it serves their prefixes too); beyond the bound, the least
recently used files go first (a file's modification time is touched when it is restored).
Each file records the route keys it serves (worker.route_keys), its own and those of the files
it replaced, which the index counts while the file (or its pending write) is there.
"""

import logging
import os
import threading
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker import state_file
from worker.route_keys import RouteKeys
from worker.state_file import Unusable

log = logging.getLogger(__name__)

MAX_PENDING = 2  # states waiting to be written; a newer one displaces the oldest
STALE_TMP_S = 600  # a `.tmp` this old was left by a crash (a live write takes seconds)


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


@dataclass(frozen=True)
class _Entry:
    model: bytes
    tokens: np.ndarray
    routes: frozenset[str]
    size: int


class StateDisk:
    def __init__(self, folder: Path, budget_bytes: int, routes: RouteKeys):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self._budget, self._routes = folder, budget_bytes, routes
        self._index: dict[str, _Entry] = {}  # file name -> what it holds
        self._pending: deque[tuple[bytes, np.ndarray, frozenset[str], bytes]] = deque()
        self._writing = False
        self._closed = False
        self._cond = threading.Condition()
        self._sync()
        self._thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
        self._thread.start()

    @property
    def size(self) -> int:
        with self._cond:
            return sum(e.size for e in self._index.values())

    def best(self, model: bytes, tokens: np.ndarray) -> tuple[str, int]:
        """The file of `model` sharing the longest prefix with `tokens`, and that length
        ("", 0 when none). The folder is read first (a listing: a millisecond for hundreds of
        files), so another worker's states count as soon as they are written."""
        self._sync()
        with self._cond:
            entries = [(name, e.tokens) for name, e in self._index.items() if e.model == model]
        # Of as long matches, the shortest state: the least to read (a shared system prompt
        # is in every conversation that starts with it).
        best = max(((name, common_prefix(held, tokens), -len(held)) for name, held in entries), key=lambda x: x[1:], default=("", 0, 0))
        return best[0], best[1]

    def holds(self, model: bytes, tokens: np.ndarray) -> bool:
        with self._cond:
            return state_file.file_name(model, tokens) in self._index

    def load(self, name: str, model: bytes) -> tuple[np.ndarray, bytes] | None:
        """The tokens and state data in file `name`, checked; None (the file removed) if it
        is not a whole state of `model`."""
        path = self.folder / name
        try:
            header, data = state_file.read(path, model)
        except Unusable as exc:
            self._drop(name, str(exc))
            return None
        with suppress(OSError):  # removed meanwhile by another worker's eviction: the data is read
            os.utime(path)  # recently used: evicted last
        return header.tokens, data

    def save(self, model: bytes, tokens: np.ndarray, routes: frozenset[str], data: bytes) -> None:
        """Queue a state, which serves `routes`, to be written; returns at once."""
        if len(data) > self._budget:
            return
        self._routes.hold(routes)
        with self._cond:
            if len(self._pending) >= MAX_PENDING:
                self._routes.release(self._pending.popleft()[2])
                log.info("state write skipped: the disk is behind")
            self._pending.append((model, tokens, routes, data))
            self._cond.notify_all()

    def close(self, timeout_s: float = 30) -> None:
        """Write what is queued (up to `timeout_s`), then stop the writer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def flush(self) -> None:
        """Block until every queued state is written."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and not self._writing)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                model, tokens, routes, data = self._pending.popleft()
                self._writing = True
            try:
                self._write(model, tokens, routes, data)
            except OSError as exc:  # a full or read-only disk costs the saving, never a job
                log.warning("could not write a saved state: %s", exc.strerror)
            finally:
                self._routes.release(routes)  # the written file holds them now, if it is there
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def _write(self, model: bytes, tokens: np.ndarray, routes: frozenset[str], data: bytes) -> None:
        started = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)  # removed meanwhile (by hand): made again
        with self._cond:
            superseded = {name: e.routes for name, e in self._index.items()
                          if e.model == model and len(e.tokens) < len(tokens) and common_prefix(e.tokens, tokens) == len(e.tokens)}
        routes = routes.union(*superseded.values())
        path = state_file.write(self.folder, model, tokens, routes, data)
        self._enter(path.name, _Entry(model, tokens, routes, path.stat().st_size))
        for name in superseded:
            self._remove(name)
        self._evict()
        log.info("state saved", extra={"tokens": len(tokens), "bytes": len(data), "save_s": round(time.monotonic() - started, 3)})

    def _sync(self) -> dict[str, float]:
        """Bring the index up to date with the folder (other workers may share it); each
        state file's modification time."""
        seen: dict[str, float] = {}
        now = time.time()
        try:
            items = list(os.scandir(self.folder))
        except OSError as exc:  # the folder removed or unreadable: no states, never a failed job
            log.warning("cannot read the saved states' folder: %s", exc.strerror)
            items = []
        for item in items:
            try:
                mtime = item.stat().st_mtime
            except OSError:
                continue
            if item.name.endswith(state_file.TMP_SUFFIX):
                if now - mtime > STALE_TMP_S:
                    Path(item.path).unlink(missing_ok=True)
                continue
            if item.name.endswith(state_file.SUFFIX):
                seen[item.name] = mtime
        with self._cond:
            gone = [self._index.pop(name) for name in self._index.keys() - seen.keys()]
            unknown = [name for name in seen if name not in self._index]
        for entry in gone:
            self._routes.release(entry.routes)
        for name in unknown:
            try:
                header = state_file.read_header(self.folder / name)
            except Unusable as exc:
                self._drop(name, str(exc))
                del seen[name]
                continue
            self._enter(name, _Entry(header.model, header.tokens, header.routes, header.file_size))
        return seen

    def _enter(self, name: str, entry: _Entry) -> None:
        self._routes.hold(entry.routes)
        with self._cond:
            old = self._index.get(name)
            self._index[name] = entry
        if old is not None:
            self._routes.release(old.routes)

    def _evict(self) -> None:
        """Remove the least recently used files until the rest fit the budget."""
        mtimes = self._sync()
        with self._cond:
            sizes = {name: e.size for name, e in self._index.items()}
        total = sum(sizes.values())
        for name in sorted(sizes, key=lambda n: mtimes.get(n, 0.0)):
            if total <= self._budget:
                break
            total -= sizes[name]
            self._remove(name)

    def _drop(self, name: str, reason: str) -> None:
        log.warning("saved state ignored and removed", extra={"file": name, "reason": reason})
        self._remove(name)

    def _remove(self, name: str) -> None:
        with self._cond:
            entry = self._index.pop(name, None)
        (self.folder / name).unlink(missing_ok=True)
        if entry is not None:
            self._routes.release(entry.routes)
