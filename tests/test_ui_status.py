"""The Status tab's plot data from a `GET /v1/status` answer (no processes, no browser)."""

import math

from ui.status import depth_series


def test_depth_lines_break_only_where_no_api_sampled() -> None:
    # Sampled every 5 s: a skipped slot (10 s) or two (15 s) is the sampler's jitter; 70 s is a gap.
    samples = [{"t": t, "interactive": n} for n, t in enumerate([100, 105, 115, 130, 200])]
    status = {"queues": {"interactive": 1, "batch": 0}, "series": {"sample_s": 5, "queue_depth": samples, "jobs": []}}
    frame = depth_series(status)
    rows = [(time.timestamp(), queue, None if math.isnan(waiting) else waiting) for time, queue, waiting in frame.itertuples(index=False)]
    assert rows == [(100, "interactive", 0), (100, "batch", 0), (105, "interactive", 1), (105, "batch", 0),
                    (115, "interactive", 2), (115, "batch", 0), (130, "interactive", 3), (130, "batch", 0),
                    (165, "interactive", None), (165, "batch", None),  # mid-gap: each queue's line breaks
                    (200, "interactive", 4), (200, "batch", 0)]
    assert str(frame["time"].dt.tz) == "UTC"  # instants: the browser draws them in its local time
    assert frame["queue"].dtype == "string"  # a category per queue (a legend by name), even when empty
    empty = {"queues": {}, "series": {"sample_s": 5, "queue_depth": [], "jobs": []}}
    assert depth_series(empty)["queue"].dtype == "string"
