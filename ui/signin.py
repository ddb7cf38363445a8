"""Sign-in: a user name and an API key or password become this browser session's token.

The token lives in a `gr.State` (in the ui process, per browser session) and, so that a reload
keeps one signed in, in the browser's storage (`gr.BrowserState`, scrambled with a key that the
page itself has, kept across restarts of the ui: `ui.settings.browser_key`). Only the session
token, never the API key or password, and only until Sign out or the session's expiry (the
api then refuses it, and the page asks again): the session is what protects it. Whether to
ask at all is the api's answer when the page loads (`GET /v1/me`), not the ui's start-up:
`make run` starts both at once. With auth off the page goes straight to the chat.
"""

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.blocks import Block

from ui.account import AccountTab
from ui.admin import AdminTab
from ui.batches import BatchTab
from ui.chat import cancel_answer
from ui.chat_layout import ChatPanel
from ui.chat_session import ChatSession
from ui.client import ApiError, HearthClient, Session
from ui.shared import SharedTab
from ui.status import StatusTab

log = logging.getLogger(__name__)

CONNECTING = "Connecting to Hearth…"
MISSING = "Enter your user name and your API key or password."
SIGNED_OUT = "You have signed out."

# Sign out first presses the chat's Stop (a reply still streaming would otherwise land in the
# cleared chat), then the ui cancels its job, drops the token and clears the page.
PRESS_STOP = """() => {
  document.querySelector('#hearth-main button[data-testid="stop-button"]')?.click();
}"""

Updates = dict[Block, Any]


def signed_in_line(user: str) -> str:
    return f"Signed in as **{user}**"


@dataclass(frozen=True)
class SignInForm:
    """The gate, shown until the api answers (or while it does not), and the form."""

    gate: gr.Column
    gate_text: gr.Markdown
    retry: gr.Button
    form: gr.Column
    message: gr.Markdown
    username: gr.Textbox
    secret: gr.Textbox
    submit: gr.Button


def signin_form() -> SignInForm:
    """Added to the page being built; all of it starts hidden but the gate's "Connecting"."""
    with gr.Column(elem_id="hearth-gate") as gate:
        gate_text = gr.Markdown(CONNECTING, elem_id="hearth-gate-text")
        retry = gr.Button("Try again", visible=False, elem_id="hearth-retry")
    with gr.Column(visible=False, elem_id="hearth-signin") as form:
        gr.Markdown("## Sign in to Hearth")
        message = gr.Markdown("", elem_id="hearth-signin-message")
        username = gr.Textbox(label="User name", max_lines=1, elem_id="hearth-username")
        secret = gr.Textbox(label="API key or password", type="password", max_lines=1, elem_id="hearth-secret")
        submit = gr.Button("Sign in", variant="primary", elem_id="hearth-sign-in")
    return SignInForm(gate, gate_text, retry, form, message, username, secret, submit)


@dataclass(frozen=True)
class Page:
    """What signing in and out switches: the form, and the signed-in page (chat, batches, status)
    with its session state."""

    token: gr.State  # the session token sent as `Authorization: Bearer`; None with auth off
    # The same, kept by the browser for a reload, as {"token": ...}: Gradio's BrowserState never
    # stores an empty value, so signing out stores {} to forget the token.
    saved_token: gr.BrowserState
    signed_in: gr.State  # True while the chat is shown
    ended: gr.State  # set by a reply the api refused with 401: the message to sign in again with
    signin: SignInForm
    main: gr.Column
    who: gr.Markdown
    sign_out: gr.Button
    chat: ChatPanel
    tabs: gr.Tabs
    status: StatusTab
    batches: BatchTab
    admin: AdminTab  # shown to admins only
    account: AccountTab
    shared: SharedTab

    def outputs(self) -> list[Block]:
        f = self.signin
        return [self.token, self.saved_token, self.signed_in, self.ended, f.gate, f.gate_text, f.retry, f.form, f.message,
                f.username, f.secret, self.main, self.who, self.sign_out, *self.chat.outputs(),
                self.tabs, self.status.timer, *self.status.outputs, self.batches.timer, self.batches.table, *self.batches.notes,
                *self.admin.outputs(), *self.account.outputs(), *self.shared.outputs()]

    def _forget(self, chat: ChatSession) -> Updates:
        """No token, an empty chat and status: nothing of the last user stays on the page."""
        chat.forget()
        return {self.token: None, self.saved_token: {}, self.signed_in: False, self.ended: None, self.signin.secret: "",
                **self.chat.reset(), self.tabs: gr.Tabs(selected="chat"), **self.status.reset(), **self.batches.reset(),
                **self.admin.reset(), **self.account.reset(), **self.shared.reset()}

    def show_gate(self, text: str) -> Updates:
        return {self.signin.gate: gr.Column(visible=True), self.signin.gate_text: text,
                self.signin.retry: gr.Button(visible=True), self.signin.form: gr.Column(visible=False),
                self.main: gr.Column(visible=False)}

    def show_form(self, chat: ChatSession, message: str) -> Updates:
        return {**self._forget(chat), self.chat.saved_conv: None, self.signin.gate: gr.Column(visible=False), self.signin.form: gr.Column(visible=True),
                self.signin.message: message, self.main: gr.Column(visible=False)}

    def show_chat(self, chat: ChatSession, session: Session) -> Updates:
        return {**self._forget(chat), self.token: session.token, self.saved_token: {"token": session.token}, self.signed_in: True,
                self.signin.gate: gr.Column(visible=False),
                self.signin.form: gr.Column(visible=False), self.signin.message: "",
                self.main: gr.Column(visible=True), self.who: signed_in_line(session.user) if session.auth else "",
                self.sign_out: gr.Button(visible=session.auth), **self.admin.shown(session.auth and session.role == "admin")}


def wire_signin(app: gr.Blocks, client: HearthClient, page: Page) -> list[Any]:
    """Returns the events after which the page may be signed in (`signed_in` says whether it is)."""
    outputs, form = page.outputs(), page.signin

    async def check_api(saved: dict[str, str | None] | None, chat: ChatSession) -> Updates:
        """On page load (and Try again): the session kept by the browser if the api still takes
        it, else sign in; straight to the chat when auth is off."""
        try:
            session = await client.with_key((saved or {}).get("token")).me()
        except ApiError as exc:
            return page.show_gate(f"⚠️ {exc.message}")
        if session is None or (session.auth and session.token is None):
            return page.show_form(chat, "")
        return page.show_chat(chat, session)

    async def sign_in(username: str, secret: str, chat: ChatSession, request: gr.Request) -> Updates:
        username = username.strip()
        if not username or not secret:
            return {form.message: f"⚠️ {MISSING}"}
        try:
            session = await client.login(username, secret, request.client.host if request.client else None)
        except ApiError as exc:
            log.info("sign-in refused", extra={"code": exc.code})  # never the name typed: it may be a password
            return {form.message: f"⚠️ {exc.message}", form.secret: ""}
        log.info("signed in", extra={"user": session.user})
        return page.show_chat(chat, session)

    async def sign_out(token: str | None, chat: ChatSession) -> Updates:
        if token is not None:
            session = client.with_key(token)
            await cancel_answer(session, chat.conv_id)  # a reply still under way would keep the worker busy
            await session.logout()
        return {**page.show_form(chat, SIGNED_OUT), form.username: ""}

    def session_ended(message: str | None, chat: ChatSession) -> Updates:
        return page.show_form(chat, f"⚠️ {message}") if message else {page.ended: gr.skip()}  # {} reads as no outputs

    quiet: dict[str, Any] = {"outputs": outputs, "show_progress": "hidden", "api_visibility": "private"}
    chat = page.chat.session
    page.sign_out.click(sign_out, inputs=[page.token, chat], js=PRESS_STOP, **quiet)
    page.ended.change(session_ended, inputs=[page.ended, chat], **quiet)
    return [app.load(check_api, inputs=[page.saved_token, chat], **quiet),
            form.retry.click(check_api, inputs=[page.saved_token, chat], **quiet),
            gr.on([form.submit.click, form.secret.submit, form.username.submit], sign_in, inputs=[form.username, form.secret, chat], **quiet)]
