"""What is left of a person's limits, as lines: the Account tab lists every limit; the chat
page, under its input, shows only those near their end (less than `NEAR` of the limit left,
i.e. 80 % or more used) or reached, refreshed after each answer and at sign-in. A request
refused at a limit shows the api's own message (which limit, when it resets) in the chat."""

from typing import Any

import gradio as gr

from ui.client import ApiError, HearthClient

NEAR = 0.2  # "near a limit": less than this share of it left
LIMITS = (("tokens_per_day", "tokens_today", "tokens today", "day"),
          ("tokens_per_month", "tokens_this_month", "tokens this month", "month"),
          ("batch_lines_per_day", "batch_lines_today", "batch lines today", "day"))
CHAT_LIMITS = ("tokens_per_day", "tokens_per_month")  # what a chat spends


def limit_lines(usage: dict[str, Any], only: tuple[str, ...] | None = None, near_only: bool = False) -> list[str]:
    """A line per set limit (among `only`; with `near_only`, those near or at their end): what is
    left of it, marked ⚠️ when near its end and ⛔ when reached, and when it resets."""
    quota, left, resets = usage["quota"], usage["left"], usage["resets"]
    shown = []
    for limit, rest, what, period in LIMITS:
        if (only is not None and limit not in only) or quota[limit] is None:
            continue
        mark = "⛔ " if left[rest] == 0 else "⚠️ " if left[rest] < NEAR * quota[limit] else ""
        if mark or not near_only:
            shown.append(f"{mark}{left[rest]} of {quota[limit]} {what} left (resets {resets[period][:16].replace('T', ' ')})")
    return shown


def near_limit_text(usage: dict[str, Any]) -> str:
    return "  \n".join(limit_lines(usage, CHAT_LIMITS, near_only=True))


def quota_line() -> gr.Markdown:
    """The chat page's line, empty unless a limit is near (added where the page is being built)."""
    return gr.Markdown("", elem_id="hearth-quota-line")


def wire_quota_line(client: HearthClient, line: gr.Markdown, token: gr.State, signed_in: gr.State, answers: list[Any]) -> None:
    """Refreshed when the page signs in or out (`signed_in` changes) and after each of `answers`."""
    async def refresh(key: str | None, signed: bool) -> str:
        if not signed:
            return ""
        try:
            return near_limit_text(await client.with_key(key).usage())
        except ApiError:  # the line is a hint; a refusal that matters shows where it happens
            return ""

    quiet: dict[str, Any] = {"outputs": [line], "show_progress": "hidden", "api_visibility": "private"}
    signed_in.change(refresh, inputs=[token, signed_in], **quiet)
    for event in answers:
        event.then(refresh, inputs=[token, signed_in], **quiet)
