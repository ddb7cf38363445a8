"""What a soak may leave behind: process memory (RSS) and Redis keys."""

import time
from dataclasses import dataclass
from pathlib import Path

import redis

from hearth.usage import USAGE_KEY

# Usage counters (hearth.usage) are records a person's traffic leaves on purpose, kept for the
# month they count: not residue of the traffic.
RECORDS = USAGE_KEY.partition("{")[0]


def _residue(client: redis.Redis) -> list[bytes]:
    return [key for key in client.scan_iter(count=1000) if not key.decode().startswith(RECORDS)]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def persistent_keys(client: redis.Redis) -> set[str]:
    """Keys without a TTL: the structures that outlive any one job (queues, indexes, metrics)."""
    return {key.decode() for key in client.scan_iter(count=1000) if client.ttl(key) == -1}


def without_ttl(client: redis.Redis, baseline: set[str]) -> list[str]:
    """Keys that have no TTL and were not there at the baseline: leaks (each named)."""
    return sorted(persistent_keys(client) - baseline)


@dataclass
class KeyCount:
    baseline: int
    after_traffic: int
    final: int
    waited_s: float


def wait_for_baseline(client: redis.Redis, baseline: set[str], deadline_s: float) -> KeyCount:
    """Wait (up to `deadline_s`) until only baseline keys are left: every other key must expire
    or be deleted (usage records apart)."""
    after = len(_residue(client))
    start = time.monotonic()
    while len(_residue(client)) > len(baseline) and time.monotonic() - start < deadline_s:
        time.sleep(1)
    return KeyCount(len(baseline), after, len(_residue(client)), round(time.monotonic() - start, 1))


def leftover(client: redis.Redis, baseline: set[str]) -> list[str]:
    """Keys that are not baseline keys, with their TTL (s): what has not expired yet."""
    return sorted(f"{key.decode()} (ttl {client.ttl(key)})" for key in _residue(client) if key.decode() not in baseline)
