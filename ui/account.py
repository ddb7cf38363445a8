"""The Account tab, everyone's: their usage today, this week and this month with what is left
of their quota, their password, their API keys (a new one shown once), and signing out of
every session. Also the page's watch on its own session: a page whose session ends elsewhere
(signed out everywhere, its person revoked) goes back to sign-in within `SESSION_CHECK_S`."""

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.blocks import Block

from ui.client import SESSION_ENDED, ApiError, HearthClient, SessionEnded
from ui.quota_line import limit_lines

TAB = "Account"
SESSION_CHECK_S = 10.0
KEY_COLUMNS = ["name", "id", "created", "last used"]
Updates = dict[Block, Any]


def ago(unix: float | None, now: float | None = None) -> str:
    """A time as how long ago it was: no timezone to get wrong."""
    if unix is None:
        return "never"
    seconds = max(0.0, (now or time.time()) - unix)
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''} ago"
    return "just now"


def shown_once(label: str, elem_id: str) -> gr.Textbox:
    """Where a new key or password appears, once, with a copy button; hidden until then."""
    return gr.Textbox(label=label, interactive=False, visible=False, buttons=["copy"], elem_id=elem_id)


def period_line(name: str, counts: dict[str, int]) -> str:
    if not counts:
        return f"**{name}:** nothing yet"
    cached = f", {counts['cached_tokens']} of them cached" if counts.get("cached_tokens") else ""
    lines = f", {counts['batch_lines']} batch lines" if counts.get("batch_lines") else ""
    return (f"**{name}:** {counts.get('requests', 0)} requests, {counts.get('tokens', 0)} tokens counted "
            f"({counts.get('prompt_tokens', 0)} prompt{cached}, {counts.get('completion_tokens', 0)} completion){lines}")


def quota_lines(usage: dict[str, Any]) -> list[str]:
    """What is left of each limit (marked when little is), and how many requests at once."""
    shown = limit_lines(usage)
    if usage["quota"]["jobs_at_once"] is not None:
        shown.append(f"{usage['quota']['jobs_at_once']} requests at once at most")
    return shown


def usage_text(usage: dict[str, Any]) -> str:
    lines = [period_line(f"Today ({usage['day']}, {usage['timezone']})", usage["today"].get("total", {})),
             period_line("This week", usage["week"].get("total", {})), period_line("This month", usage["month"].get("total", {}))]
    limits = quota_lines(usage)
    lines.append("**Your limits:** " + ("; ".join(limits) if limits else "none"))
    return "  \n".join(lines)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
                      *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)])


def plain(text: str) -> str:
    """A person's own words (a key's name) as literal text in Markdown."""
    return "".join(f"\\{c}" if c in "\\`*_{}[]()<>#+-.!|~" else c for c in text)


def keys_table(keys: list[dict[str, Any]]) -> str:
    rows = [[plain(k["name"]) or "(unnamed)", k["id"], ago(k["created"]), ago(k["last_used"])] for k in keys]
    return markdown_table(KEY_COLUMNS, rows) if rows else "No keys."


@dataclass(frozen=True)
class AccountTab:
    usage: gr.Markdown
    keys: gr.Markdown
    key_choice: gr.Dropdown
    new_key: gr.Textbox
    message: gr.Markdown
    passwords: tuple[gr.Textbox, gr.Textbox]

    def outputs(self) -> list[Block]:
        return [self.usage, self.keys, self.key_choice, self.new_key, self.message, *self.passwords]

    def reset(self) -> Updates:
        """Nothing of the last person stays (for a sign-out)."""
        return {self.usage: "", self.keys: "", self.key_choice: gr.Dropdown(choices=[], value=None),
                self.new_key: gr.Textbox(value="", visible=False), self.message: "", **{box: "" for box in self.passwords}}


async def refused(work: Awaitable[Updates], message: gr.Markdown, ended: gr.State) -> Updates:
    """`work`'s updates, or its refusal as the tab's `message`; an ended session signs the page out."""
    try:
        return await work
    except SessionEnded as exc:
        return {ended: exc.message}
    except ApiError as exc:
        return {message: f"⚠️ {exc.message}"}


def account_tab(client: HearthClient, token: gr.State, ended: gr.State, tabs: gr.Tabs) -> AccountTab:
    with gr.Tab(TAB, id="account"):
        usage = gr.Markdown("", elem_id="hearth-account-usage")
        message = gr.Markdown("", elem_id="hearth-account-message")
        gr.Markdown("### API keys\nFor programs that use Hearth's OpenAI-compatible api. A new key is shown once: copy it then.")
        keys = gr.Markdown("", elem_id="hearth-account-keys")
        with gr.Row():
            key_name = gr.Textbox(label="New key's name", max_lines=1, elem_id="hearth-account-key-name")
            create = gr.Button("Create key", elem_id="hearth-account-create-key")
        new_key = shown_once("Your new key (shown only now)", "hearth-account-new-key")
        with gr.Row():
            key_choice = gr.Dropdown(label="Key", choices=[], elem_id="hearth-account-key-choice")
            revoke = gr.Button("Revoke key", variant="stop", elem_id="hearth-account-revoke-key")
        gr.Markdown("### Password")
        with gr.Row():
            current = gr.Textbox(label="Current password (empty if you have none)", type="password", max_lines=1, elem_id="hearth-account-current")
            new = gr.Textbox(label="New password (8 characters or more)", type="password", max_lines=1, elem_id="hearth-account-new")
            change = gr.Button("Change password", elem_id="hearth-account-change-password")
        gr.Markdown("### Sessions")
        everywhere = gr.Button("Sign out everywhere", variant="stop", elem_id="hearth-account-sign-out-everywhere")
    tab = AccountTab(usage, keys, key_choice, new_key, message, (current, new))
    outputs = [*tab.outputs(), ended]

    async def shown(session: HearthClient) -> Updates:
        mine = await session.my_keys()
        return {usage: usage_text(await session.usage()), keys: keys_table(mine),
                key_choice: gr.Dropdown(choices=[(f"{k['name'] or '(unnamed)'} ({k['id']})", k["id"]) for k in mine], value=None)}

    async def on_tab(event: gr.SelectData, key: str | None) -> Updates:
        if event.value != TAB:
            return {ended: gr.skip()}
        return await refused(shown(client.with_key(key)), message, ended)

    async def create_key(name: str, key: str | None) -> Updates:
        async def work() -> Updates:
            session = client.with_key(key)
            made = await session.create_key(name.strip())
            return {**await shown(session), new_key: gr.Textbox(value=made, visible=True), message: "Key created: copy it now, it is not shown again."}
        return await refused(work(), message, ended)

    async def revoke_key(key_id: str | None, key: str | None) -> Updates:
        if not key_id:
            return {message: "Choose a key first."}

        async def work() -> Updates:
            session = client.with_key(key)
            await session.revoke_key(key_id)
            return {**await shown(session), message: f"Key {key_id} revoked."}
        return await refused(work(), message, ended)

    async def change_password(old: str, fresh: str, key: str | None) -> Updates:
        async def work() -> Updates:
            await client.with_key(key).change_password(old, fresh)
            return {message: "Password changed.", current: "", new: ""}
        return await refused(work(), message, ended)

    async def sign_out_everywhere(key: str | None) -> Updates:
        async def work() -> Updates:
            await client.with_key(key).sign_out_everywhere()
            return {ended: "You have signed out everywhere."}
        return await refused(work(), message, ended)

    quiet: dict[str, Any] = {"outputs": outputs, "show_progress": "hidden", "api_visibility": "private"}
    tabs.select(on_tab, inputs=[token], **quiet)
    create.click(create_key, inputs=[key_name, token], **quiet)
    revoke.click(revoke_key, inputs=[key_choice, token], **quiet)
    change.click(change_password, inputs=[current, new, token], **quiet)
    everywhere.click(sign_out_everywhere, inputs=[token], **quiet)
    return tab


def watch_session(client: HearthClient, token: gr.State, ended: gr.State) -> gr.Timer:
    """Every `SESSION_CHECK_S`, while signed in with a session: is it still one? If not (signed
    out everywhere, revoked), `ended` signs the page out."""
    timer = gr.Timer(SESSION_CHECK_S)

    async def check(key: str | None) -> Any:
        if key is None:
            return gr.skip()
        try:
            alive = await client.with_key(key).me()
        except ApiError:
            return gr.skip()  # the api unreachable for a moment: not a sign-out
        return gr.skip() if alive is not None else SESSION_ENDED

    timer.tick(check, inputs=[token], outputs=[ended], show_progress="hidden", api_visibility="private")
    return timer
