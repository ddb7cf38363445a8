"""Usage per person, model and day, kept in Redis: the one owner of its keys and of the
calendar they are dated by.

A job's usage is counted where it ends, by the worker that ran it, in the pipeline that
carries its final event and ahead of it (worker.meter): whoever sees a job ended sees it
counted, and a job is counted once. A batch line is counted as a line when it is queued
(api.usage.quota, atomically with the quota check). Every count goes to the day's hash and
the month's, so a quota reads one hash per period.

Days are Redis's clock (`TIME`, the one clock every host shares) read in `USAGE_TIMEZONE`: a
household's day ends at its own midnight, whichever host counts.
"""

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from hearth.lifecycle import redis_seconds

USAGE_KEY = "hearth:usage:{user}:{period}"  # hash: "<model>|<counter>" and "total|<counter>" -> count
TOTAL = "total"
DAY_KEPT_S = 62 * 86400  # long enough for a month's days and a week that began last month
MONTH_KEPT_S = 400 * 86400


class Counter(StrEnum):
    REQUESTS = "requests"  # jobs a worker ended (completed, failed, cancelled, timed out)
    PROMPT_TOKENS = "prompt_tokens"
    CACHED_TOKENS = "cached_tokens"  # of the prompt tokens: taken from a saved state, not evaluated
    COMPLETION_TOKENS = "completion_tokens"
    QUOTA_TOKENS = "tokens"  # what quotas count: prompt tokens evaluated (not cached) + completion tokens
    BATCH_LINES = "batch_lines"  # counted when a line is queued


def field(model: str, counter: Counter) -> str:
    return f"{model}|{counter.value}"


def day_of(moment: datetime) -> str:
    return moment.date().isoformat()


def month_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


def usage_key(user: str, period: str) -> str:
    return USAGE_KEY.format(user=user, period=period)


def period_keys(user: str, moment: datetime) -> tuple[str, str]:
    """The user's hashes for the day and the month of `moment`."""
    return usage_key(user, day_of(moment)), usage_key(user, month_of(moment))


class UsageClock:
    """Redis's time in the operator's timezone; `offset_s` moves it (a test's way to reach
    midnight without waiting for it)."""

    def __init__(self, timezone: str, offset_s: float = 0.0):
        self.zone, self._offset = ZoneInfo(timezone), offset_s

    def at(self, time_reply: tuple[int, int] | list[int]) -> datetime:
        """The moment Redis's `TIME` reply names, in the household's timezone."""
        return datetime.fromtimestamp(redis_seconds(time_reply) + self._offset, self.zone)

    def next_day(self, moment: datetime) -> datetime:
        return datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), self.zone)

    def next_month(self, moment: datetime) -> datetime:
        first = moment.date().replace(day=1) + timedelta(days=32)
        return datetime.combine(first.replace(day=1), datetime.min.time(), self.zone)


def week_days(moment: datetime) -> list[date]:
    """The days of `moment`'s week (Monday first) up to its own."""
    today = moment.date()
    return [today - timedelta(days=n) for n in range(today.weekday(), -1, -1)]


class Pipe(Protocol):
    def hincrby(self, name: str, key: str, amount: int = 1) -> Any: ...
    def expire(self, name: str, time: int) -> Any: ...


def count(pipe: Pipe, user: str, model: str, moment: datetime, counts: Mapping[Counter, int]) -> None:
    """Queue on `pipe` the increments of `counts` for `user` and `model` in `moment`'s day and month."""
    day, month = period_keys(user, moment)
    for key, kept in ((day, DAY_KEPT_S), (month, MONTH_KEPT_S)):
        for counter, n in counts.items():
            if n:
                pipe.hincrby(key, field(model, counter), n)
                pipe.hincrby(key, field(TOTAL, counter), n)
        pipe.expire(key, kept)


def job_counts(prompt: int, cached: int, completion: int) -> dict[Counter, int]:
    """One ended job's counts. Cached prompt tokens do not count against quotas: a saved state
    made them nearly free, and a long conversation would otherwise pay for its history each turn."""
    return {Counter.REQUESTS: 1, Counter.PROMPT_TOKENS: prompt, Counter.CACHED_TOKENS: cached,
            Counter.COMPLETION_TOKENS: completion, Counter.QUOTA_TOKENS: prompt - cached + completion}


def totals(raw: Mapping[bytes, bytes]) -> dict[str, dict[str, int]]:
    """A usage hash as {model or "total": {counter: n}}."""
    out: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        model, _, counter = name.decode().rpartition("|")
        out.setdefault(model, {})[counter] = int(value)
    return out
