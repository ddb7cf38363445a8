"""The Admin tab, shown to admins only (hidden from everyone else, not merely emptied):
everyone with their usage today; add a person (their first key shown once, to copy); set or
reset a password; make or unmake an admin; a person's limits; revoke a person, with what that
deletes shown before it happens. All through the api's admin routes, which refuse anyone else
whatever the page shows."""

from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.blocks import Block

from ui.account import ago, markdown_table, refused, shown_once
from ui.client import ApiError, HearthClient

TAB = "Admin"
DEFAULT = "*"  # the Person list's entry for everyone's default limits
COLUMNS = ["name", "role", "keys", "last seen", "requests today", "tokens today", "password"]
LIMITS = (("tokens_per_day", "Tokens per day"), ("tokens_per_month", "Tokens per month"),
          ("jobs_at_once", "Requests at once"), ("batch_lines_per_day", "Batch lines per day"))
Updates = dict[Block, Any]


def people_table(people: list[dict[str, Any]]) -> str:
    """A Markdown table (names are letters, digits, '-', '_' and '.': nothing to escape)."""
    rows = [[p["name"], p["role"], p["keys"], ago(p["last_seen"]), p["usage_today"].get("requests", 0),
             p["usage_today"].get("tokens", 0), "set" if p["has_password"] else "none"] for p in people]
    return markdown_table(COLUMNS, rows) if rows else ""


def revocation_text(r: dict[str, Any]) -> str:
    return (f"Revoking **{r['user']}** deletes {r['keys']} API key(s), signs out {r['sessions']} open session(s), "
            f"and deletes {r['conversations']} conversation(s), {r['documents']} document(s), {r['responses']} stored response(s) "
            f"and {r['usage_records']} day(s) or month(s) of usage records, "
            "with their quota. This cannot be undone.")


@dataclass(frozen=True)
class AdminTab:
    tab: gr.Tab
    table: gr.Markdown
    chosen: gr.Dropdown
    secret: gr.Textbox  # a new key or password, shown once
    preview: gr.Markdown
    confirm: gr.Button
    message: gr.Markdown

    def outputs(self) -> list[Block]:
        return [self.tab, self.table, self.chosen, self.secret, self.preview, self.confirm, self.message]

    def shown(self, admin: bool) -> Updates:
        return {self.tab: gr.Tab(visible=admin)}

    def reset(self) -> Updates:
        """Hidden, and nothing of what it showed stays (for a sign-out)."""
        return {**self.shown(False), self.table: people_table([]), self.chosen: gr.Dropdown(choices=[], value=None),
                self.secret: gr.Textbox(value="", visible=False), self.preview: "", self.confirm: gr.Button(visible=False),
                self.message: ""}


def admin_tab(client: HearthClient, token: gr.State, ended: gr.State, tabs: gr.Tabs) -> AdminTab:
    # Hidden until an admin signs in (`AdminTab.shown`); its contents are drawn when first opened.
    with gr.Tab(TAB, id="admin", visible=False, elem_id="hearth-admin") as tab:
        gr.Markdown("### People")
        table = gr.Markdown("", elem_id="hearth-admin-people")
        message = gr.Markdown("", elem_id="hearth-admin-message")
        secret = shown_once("Shown only now: copy it", "hearth-admin-secret")
        gr.Markdown("### Add a person")
        with gr.Row():
            new_name = gr.Textbox(label="Name (letters, digits, '-', '_' or '.')", max_lines=1, elem_id="hearth-admin-new-name")
            new_admin = gr.Checkbox(label="Admin", elem_id="hearth-admin-new-admin")
            add = gr.Button("Add person", variant="primary", elem_id="hearth-admin-add")
        gr.Markdown("### A person")
        chosen = gr.Dropdown(label="Person", choices=[], elem_id="hearth-admin-chosen")
        with gr.Row():
            password = gr.Textbox(label="New password", type="password", max_lines=1, elem_id="hearth-admin-password")
            set_password = gr.Button("Set password", elem_id="hearth-admin-set-password")
            reset_password = gr.Button("Reset password", elem_id="hearth-admin-reset-password")
        with gr.Row():
            make_admin = gr.Button("Make admin", elem_id="hearth-admin-make-admin")
            make_user = gr.Button("Make user", elem_id="hearth-admin-make-user")
        whose = gr.Markdown("", elem_id="hearth-admin-limits-of")  # once shown, the boxes hold that one's limits
        with gr.Row():
            limits = [gr.Textbox(label=f"{label} (empty: none; a person's: the default's)", max_lines=1, elem_id=f"hearth-admin-{name}")
                      for name, label in LIMITS]
        set_limits = gr.Button("Set limits", elem_id="hearth-admin-set-limits")
        revoke = gr.Button("Revoke…", variant="stop", elem_id="hearth-admin-revoke")
        preview = gr.Markdown("", elem_id="hearth-admin-preview")
        confirm = gr.Button("Yes, revoke", variant="stop", visible=False, elem_id="hearth-admin-confirm")
    view = AdminTab(tab, table, chosen, secret, preview, confirm, message)
    outputs = [table, chosen, secret, preview, confirm, message, password, ended]

    async def listed(session: HearthClient, keep: str | None = None) -> Updates:
        people = await session.people()
        names = [p["name"] for p in people]
        choices = [("Everyone (default limits)", DEFAULT), *((n, n) for n in names)]
        return {table: people_table(people), chosen: gr.Dropdown(choices=choices, value=keep if keep in [DEFAULT, *names] else None),
                preview: "", confirm: gr.Button(visible=False)}

    async def on_tab(event: gr.SelectData, key: str | None, person: str | None) -> Updates:
        if event.value != TAB:
            return {ended: gr.skip()}
        return await refused(listed(client.with_key(key), person), message, ended)

    def acting(key: str | None, person: str | None, done: str, act: Any, shows: str | None = None) -> Any:
        async def work() -> Updates:
            session = client.with_key(key)
            result = await act(session)
            updates = {**await listed(session, person), message: done, secret: gr.Textbox(value="", visible=False)}
            if shows is not None:
                updates[secret] = gr.Textbox(value=result, visible=True, label=shows)
            return updates
        return refused(work(), message, ended)

    async def add_person(name: str, admin: bool, key: str | None, person: str | None) -> Updates:
        name = name.strip()
        return await acting(key, person, f"Added {name}: give them the key below (sign-in: their name and this key).",
                            lambda s: s.add_person(name, admin), shows=f"{name}'s API key (shown only now)")

    def needs_person(person: str | None) -> Updates | None:
        return None if person and person != DEFAULT else {message: "Choose a person first."}

    async def set_pw(person: str | None, new: str, key: str | None) -> Updates:
        return needs_person(person) or {**await acting(key, person, f"Password set for {person}.", lambda s: s.set_password(person, new)),
                                        password: ""}

    async def reset_pw(person: str | None, key: str | None) -> Updates:
        return needs_person(person) or await acting(key, person, f"New password for {person}: give it to them.",
                                                    lambda s: s.reset_password(person), shows=f"{person}'s new password (shown only now)")

    async def role(person: str | None, key: str | None, admin: bool) -> Updates:
        what = "an admin" if admin else "a user"
        return needs_person(person) or await acting(key, person, f"{person} is now {what}.", lambda s: s.set_role(person, admin))

    async def set_quota(person: str | None, key: str | None, *values: str) -> Updates:
        if not person:
            return {message: "Choose a person, or everyone, first."}
        if not all(v.strip().isdigit() for v in values if v.strip()):
            return {message: "⚠️ A limit is a whole number, or empty for none (a person's: the default's)."}
        quota = {name: int(value) if value.strip() else None for (name, _), value in zip(LIMITS, values)}
        if person == DEFAULT:
            return await acting(key, person, "Default limits set for everyone.", lambda s: s.set_default_quota(quota))
        return await acting(key, person, f"Limits set for {person}.", lambda s: s.set_quota(person, quota))

    async def limits_of(person: str | None, key: str | None) -> tuple[Any, ...]:
        """The chosen one's own limits in the boxes (empty: none of their own), and whose they
        are: a value typed before they arrive is replaced, so the page says when they have. The
        revoke preview of someone else goes."""
        quota: dict[str, Any] = {}
        if person:
            try:
                every = await client.with_key(key).quotas()
            except ApiError:
                every = {"default": {}, "people": {}}
            quota = every["default"] if person == DEFAULT else every["people"].get(person, {})
        title = "" if not person else "Everyone's default limits:" if person == DEFAULT else f"Limits of `{person}`:"
        return ("", gr.Button(visible=False), title, *("" if quota.get(name) is None else str(quota[name]) for name, _ in LIMITS))

    async def preview_revoke(person: str | None, key: str | None) -> Updates:
        async def work() -> Updates:
            shown = revocation_text(await client.with_key(key).revocation(str(person)))
            return {preview: shown, confirm: gr.Button(visible=True)}
        return needs_person(person) or await refused(work(), message, ended)

    async def confirm_revoke(person: str | None, key: str | None) -> Updates:
        return needs_person(person) or await acting(key, None, f"Revoked {person}.", lambda s: s.revoke(person))

    quiet: dict[str, Any] = {"outputs": outputs, "show_progress": "hidden", "api_visibility": "private"}
    tabs.select(on_tab, inputs=[token, chosen], **quiet)
    add.click(add_person, inputs=[new_name, new_admin, token, chosen], **quiet)
    set_password.click(set_pw, inputs=[chosen, password, token], **quiet)
    reset_password.click(reset_pw, inputs=[chosen, token], **quiet)
    async def to_admin(person: str | None, key: str | None) -> Updates:
        return await role(person, key, True)

    async def to_user(person: str | None, key: str | None) -> Updates:
        return await role(person, key, False)

    make_admin.click(to_admin, inputs=[chosen, token], **quiet)
    make_user.click(to_user, inputs=[chosen, token], **quiet)
    set_limits.click(set_quota, inputs=[chosen, token, *limits], **quiet)
    revoke.click(preview_revoke, inputs=[chosen, token], **quiet)
    confirm.click(confirm_revoke, inputs=[chosen, token], **quiet)
    chosen.change(limits_of, inputs=[chosen, token], outputs=[preview, confirm, whose, *limits], show_progress="hidden", api_visibility="private")
    return view
