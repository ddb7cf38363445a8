"""`python -m soak [--seconds N]`: start redis-server, a worker and the api (AUTH on), run mixed
traffic from several people for SOAK_S seconds (default 600), print the summary; exit 1 if
anything is unaccounted, memory grew, or Redis kept what it should not."""

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from devstack import RedisServer, serve
from hearth.logs import setup_logging
from hearth.settings import CommonSettings
from soak.run import soak

# Short lives for jobs, files, batches and the names of saved states' holders (their minimums),
# so the soak can watch their keys go.
TTL_S = 60
# A small state cache fills during the warm-up: its growth to its bound is not a leak.
STACK = {"AUTH": "on", "MAX_WAITING_PER_USER": "2", "DEFAULT_MAX_TOKENS": "8", "STATE_CACHE_MB": "16",
         "JOB_TTL_S": str(TTL_S), "FILE_RETENTION_S": str(TTL_S), "STATE_ROUTE_TTL_S": str(TTL_S)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    p.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_S", 600)), help="traffic time (default: SOAK_S or 600)")
    p.add_argument("--people", type=int, default=3, help="simulated people (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of their choices (default: %(default)s)")
    args = p.parse_args(argv)
    setup_logging("soak", CommonSettings(log_format="text"))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log_dir = Path(tempfile.mkdtemp(prefix="hearth-soak-"))
    logging.getLogger(__name__).info("starting redis, worker and api (logs in %s)", log_dir)
    server = RedisServer(log_dir)
    try:
        stack = serve(server, log_dir, **STACK)
        report = soak(next(stack), args.seconds, args.people, args.seed, keys_deadline_s=TTL_S * 2 + 30)
        stack.close()
    finally:
        server.stop()
    print(report.render(), flush=True)
    if report.ok:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"process logs: {log_dir}", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
