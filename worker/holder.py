"""A worker's holder id: who holds the saved states in its STATE_DIR, named in the route keys
(hearth.state_routes) and its heartbeat. WORKER_NAME changes at each restart (its default has
the pid); the holder id stays with the folder, so a restarted worker is still the holder of the
states it saved before.

The folder keeps numbered slots (`slot-0.holder`, ...), each holding an id. A worker takes the
first slot that no running process has locked (`flock`, released by the kernel when the process
ends, however it ends) and keeps it locked while it runs: two workers never share an id, even
when they are pointed at one folder (they then share the states, so either may answer).
"""

import fcntl
import logging
import os
import secrets
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

SLOT = "slot-{n}.holder"


class Holder:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1024):
            file = (folder / SLOT.format(n=n)).open("a+")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a running worker's
                file.close()
                continue
            self._file: IO[str] = file  # kept open: the lock lasts as long as this process
            file.seek(0)
            self.id = file.read().strip()
            if not self.id:
                self.id = secrets.token_hex(8)
                file.write(self.id)
                file.flush()
                os.fsync(file.fileno())
            log.info("holder of the saved states", extra={"holder": self.id, "slot": n})
            return
        raise RuntimeError(f"every holder slot in {folder} is taken")
