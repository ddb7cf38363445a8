"""Test-only: a process started with this folder on its PYTHONPATH runs with its wall clock
(`time.time`) off by `HEARTH_TEST_CLOCK_SKEW_S` seconds, as on a host whose clock is wrong.
Python imports `sitecustomize` at start-up; no Hearth code knows about this file."""

import os
import time

_skew = float(os.environ.get("HEARTH_TEST_CLOCK_SKEW_S", "0"))
_time, _time_ns = time.time, time.time_ns
time.time = lambda: _time() + _skew
time.time_ns = lambda: _time_ns() + int(_skew * 1e9)
