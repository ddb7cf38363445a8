"""The page: sign-in, then the Chat (conversations kept by the api), Batch, Status, Shared,
Account and Admin (admins' contents) tabs."""

import gradio as gr

from ui.account import account_tab, watch_session
from ui.admin import admin_tab
from ui.batches import batch_tab
from ui.chat import wire_chat
from ui.chat_layout import chat_panel, chat_sidebar
from ui.client import HearthClient
from ui.idle_queue import IdleQueue
from ui.quota_line import quota_line, wire_quota_line
from ui.shared import shared_tab
from ui.signin import Page, signin_form, wire_signin
from ui.status import status_tab

# Passed to `launch(css=...)`: Gradio's tabs do not fill a `fill_height` page by themselves,
# and the chat should keep the whole height; the sign-in form is a narrow centred column.
CSS = """
.hearth-tabs { flex-grow: 1; display: flex; }
#hearth-gate, #hearth-signin { max-width: 28rem; width: 100%; margin: 3rem auto 0; }
#hearth-conversations label { width: 100%; }
"""


# Files Gradio keeps in its cache (uploads, a batch's answers offered for download) are
# deleted once older than this, checked as often: nobody's data stays on the ui's disk.
CACHE_LIFE_S = 7200


def build_app(client: HearthClient, browser_key: str, concurrency: int) -> gr.Blocks:
    """`browser_key`: the key of what the browser keeps for a reload (`ui.settings.browser_key`);
    `concurrency`: the events (replies) run at once (`UiSettings.ui_concurrency`)."""
    with gr.Blocks(title="Hearth", analytics_enabled=False, fill_height=True, delete_cache=(CACHE_LIFE_S, CACHE_LIFE_S)) as app:
        token = gr.State(None)  # this browser session's token from the sign-in; None with auth off
        ended = gr.State(None)
        saved_token = gr.BrowserState(None, storage_key="hearth-session", secret=browser_key)
        signed_in = gr.State(False)
        form = signin_form()
        sidebar = chat_sidebar()
        with gr.Column(visible=False, scale=1, elem_id="hearth-main") as main:
            with gr.Row(equal_height=True):
                who = gr.Markdown("", elem_id="hearth-who")
                sign_out = gr.Button("Sign out", size="sm", scale=0, min_width=100, visible=False, elem_id="hearth-sign-out")
            with gr.Tabs(elem_classes="hearth-tabs") as tabs:
                with gr.Tab("Chat", id="chat", scale=1):
                    chat = chat_panel(sidebar, browser_key)
                    near_limit = quota_line()
                batches = batch_tab(client, token, tabs)
                status = status_tab(client, token, tabs)
                shared = shared_tab(client, token, ended, tabs)
                account = account_tab(client, token, ended, tabs)
                admin = admin_tab(client, token, ended, tabs)
        watch_session(client, token, ended)
        page = Page(token, saved_token, signed_in, ended, form, main, who, sign_out, chat, tabs, status, batches, admin, account, shared)
        answers = wire_chat(client, chat, token, ended, signed_in, wire_signin(app, client, page), concurrency)
        wire_quota_line(client, near_limit, token, signed_in, answers)
    app.queue(default_concurrency_limit=concurrency)
    app._queue = IdleQueue.replacing(app._queue)  # Gradio's own polls every millisecond, work or not
    return app
