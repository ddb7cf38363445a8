"""The soak (`make soak`) for 60 seconds: several people chatting, streaming, cancelling,
leaving mid-stream, re-attaching, sending bad requests, flooding past their cap and running
batches. Nothing unaccounted, memory flat, and Redis back to its baseline once TTLs run out."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import RedisServer, Stack, serve
from soak.__main__ import STACK, TTL_S
from soak.run import RSS_TOLERANCE, soak


@pytest.fixture
def soak_stack(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    yield from serve(redis_server, log_dir, **STACK)


@pytest.mark.timeout(600)
def test_a_minute_of_mixed_traffic_leaves_nothing_behind(soak_stack: Stack) -> None:
    report = soak(soak_stack, seconds=60, people=3, seed=7, keys_deadline_s=TTL_S * 2 + 30)
    print(report.render())  # the summary, for -s and for a failure's captured output
    ledger = report.ledger
    assert ledger.all_accounted, ledger.render()
    for kind in ("answered: chat", "answered: chat streamed", "cancelled: by request", "cancelled: client left mid-stream",
                 "answered: events, re-attached", "rejected: 400 (invalid_request_error)", "answered: batch created"):
        assert ledger.outcomes[kind] > 0, f"no {kind!r} in a minute:\n{ledger.render()}"
    assert report.still_serving.startswith("yes"), report.still_serving
    for name, (warm, end) in report.rss.items():
        assert end <= warm * (1 + RSS_TOLERANCE), f"{name} grew from {warm:.1f} to {end:.1f} MiB"
    assert report.no_ttl == [], report.render()
    assert report.keys is not None and report.keys.final <= report.keys.baseline, report.render()
