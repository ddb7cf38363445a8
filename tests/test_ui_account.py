"""What the Account tab says of a person's usage and limits (ui.account), from `/v1/usage`'s shape."""

from typing import Any

from ui.account import ago, plain, quota_lines, usage_text

USAGE: dict[str, Any] = {"day": "2026-12-03", "timezone": "Europe/Paris", "today": {"total": {"requests": 2, "tokens": 90, "prompt_tokens": 80,
         "cached_tokens": 20, "completion_tokens": 30}}, "week": {}, "month": {},
         "quota": {"tokens_per_day": 100, "tokens_per_month": 1000, "jobs_at_once": 2, "batch_lines_per_day": None},
         "left": {"tokens_today": 10, "tokens_this_month": 910, "batch_lines_today": None},
         "resets": {"day": "2026-12-04T00:00:00+01:00", "month": "2027-01-01T00:00:00+01:00"}}


def test_near_a_limit_is_marked_and_a_reached_one_too() -> None:
    lines = quota_lines(USAGE)
    assert lines[0] == "⚠️ 10 of 100 tokens today left (resets 2026-12-04 00:00)"  # under a fifth left
    assert lines[1] == "910 of 1000 tokens this month left (resets 2027-01-01 00:00)"
    assert lines[2] == "2 requests at once at most" and len(lines) == 3
    spent = {**USAGE, "left": {**USAGE["left"], "tokens_today": 0}}
    assert quota_lines(spent)[0].startswith("⛔ 0 of 100")


def test_usage_text_says_each_period_and_what_was_cached() -> None:
    text = usage_text(USAGE)
    assert "**Today (2026-12-03, Europe/Paris):** 2 requests, 90 tokens counted (80 prompt, 20 of them cached, 30 completion)" in text
    assert "**This week:** nothing yet" in text and "**Your limits:** ⚠️ 10 of 100" in text


def test_times_and_names_read_safely() -> None:
    assert ago(None) == "never" and ago(100, now=100) == "just now" and ago(0, now=7200) == "2 h ago" and ago(0, now=3 * 86400) == "3 days ago"
    assert plain("my *key* | [x]") == "my \\*key\\* \\| \\[x\\]"
