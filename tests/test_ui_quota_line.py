"""What the chat page's line says of a person's limits (ui.quota_line), from `/v1/usage`'s shape."""

from typing import Any

from tests.test_ui_account import USAGE
from ui.quota_line import near_limit_text


def with_left(tokens_today: int, tokens_this_month: int, usage: dict[str, Any] = USAGE) -> dict[str, Any]:
    return {**usage, "left": {**usage["left"], "tokens_today": tokens_today, "tokens_this_month": tokens_this_month}}


def test_the_line_names_token_limits_near_or_at_their_end_only() -> None:
    assert near_limit_text(with_left(21, 201)) == ""  # over a fifth of each left
    assert near_limit_text(with_left(19, 201)) == "⚠️ 19 of 100 tokens today left (resets 2026-12-04 00:00)"
    assert near_limit_text(with_left(0, 199)) == ("⛔ 0 of 100 tokens today left (resets 2026-12-04 00:00)  \n"
                                                  "⚠️ 199 of 1000 tokens this month left (resets 2027-01-01 00:00)")


def test_no_limit_or_another_kind_of_limit_says_nothing() -> None:
    unlimited = {**USAGE, "quota": {**USAGE["quota"], "tokens_per_day": None, "tokens_per_month": None, "batch_lines_per_day": 10},
                 "left": {"tokens_today": None, "tokens_this_month": None, "batch_lines_today": 0}}
    assert near_limit_text(unlimited) == ""  # batch lines are no chat's business
