"""The chat page: a Gradio ChatInterface whose replies stream from the api.

The page shows more than the model's words: the place in line while a request waits, a note when
earlier messages had to be left out, and errors in plain language. Those are "notes": assistant
messages with a metadata title, which Gradio draws as a labelled box and which are never sent
back to the model.
"""

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ui.batches import batch_tab
from ui.client import ApiError, ChatEvent, ContextTrimmed, Delta, Finished, HearthClient, Loading, Queued, SessionEnded, Started
from ui.signin import Page, signin_form, wire_signin
from ui.status import status_tab

log = logging.getLogger(__name__)

# Replies running at once through this ui. Each is an open HTTP stream waiting on the api's own
# queue, so the bound only guards the ui process; Gradio's default of 1 would make users wait
# here, invisible to the api's queue and its "you are #N in line".
CONCURRENCY_LIMIT = 64

UNEXPECTED = "Something went wrong in the chat page. Try again; if it keeps happening, check the ui's log."
CUT_SHORT = "The reply reached its length limit and was cut short."
EMPTY = "The model ended its reply without writing anything. Try rephrasing the message."

Message = dict[str, Any]

# Passed to `launch(css=...)`: Gradio's tabs do not fill a `fill_height` page by themselves,
# and the chat should keep the whole height; the sign-in form is a narrow centred column.
CSS = """
.hearth-tabs { flex-grow: 1; display: flex; }
#hearth-gate, #hearth-signin { max-width: 28rem; width: 100%; margin: 3rem auto 0; }
"""


def queue_line(position: int, eta_s: float | None) -> str:
    line = f"You are #{position} in line"
    return line if eta_s is None else f"{line} (about {max(1, round(eta_s))} s)"


def trimmed_line(messages: int) -> str:
    if messages == 1:
        return "1 earlier message was left out to fit the model's memory"
    return f"{messages} earlier messages were left out to fit the model's memory"


def note(title: str) -> Message:
    return {"role": "assistant", "content": "", "metadata": {"title": title}}


def is_note(message: Message) -> bool:
    return bool((message.get("metadata") or {}).get("title"))


def _text(content: Any) -> str:
    """Plain text of a Gradio 6 message: a string, or a list of blocks (files are skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, list):
        parts = [b if isinstance(b, str) else b.get("text") for b in content if isinstance(b, (str, dict))]
        return "\n".join(p for p in parts if isinstance(p, str) and p)
    return ""


def to_openai(history: list[Message], message: str) -> list[dict[str, str]]:
    """The conversation as OpenAI messages: every turn shown, minus the ui's own notes."""
    messages = []
    for item in history:
        if is_note(item) or item.get("role") not in ("user", "assistant"):
            continue
        text = _text(item.get("content"))
        if text:
            messages.append({"role": item["role"], "content": text})
    messages.append({"role": "user", "content": message})
    return messages


@dataclass
class ReplyView:
    """What the page shows of one reply, rebuilt on every change (Gradio replaces the reply)."""

    waiting: str | None = None
    before: list[str] = field(default_factory=list)  # notes about the prompt
    text: str = ""
    after: list[str] = field(default_factory=list)  # notes about how the reply ended

    def messages(self) -> list[Message]:
        shown = [note(n) for n in self.before]
        if self.waiting:
            shown.append(note(self.waiting))
        if self.text:
            shown.append({"role": "assistant", "content": self.text})
        return shown + [note(n) for n in self.after]

    def fail(self, message: str) -> None:
        self.waiting = None
        self.after.append(f"⚠️ {message}")

    def apply(self, event: ChatEvent) -> bool:
        """Take in one event; True when the page should be updated."""
        if isinstance(event, Queued):
            self.waiting = queue_line(event.position, event.eta_s)
        elif isinstance(event, Started):
            if self.waiting is None:
                return False
            self.waiting = None
        elif isinstance(event, Loading):
            self.waiting = f"Loading {event.model}…"
        elif isinstance(event, ContextTrimmed):
            self.before.append(f"ℹ️ {trimmed_line(event.messages)}")
        elif isinstance(event, Delta):
            self.waiting = None
            self.text += event.text
        elif isinstance(event, Finished):
            self.waiting = None
            if event.finish_reason == "length":
                self.after.append(f"ℹ️ {CUT_SHORT}")
            elif not self.text:
                self.after.append(f"ℹ️ {EMPTY}")
            else:
                return False
        return True


def make_reply(client: HearthClient) -> Callable[[str, list[Message], str | None], AsyncGenerator[list[Message]]]:
    async def reply(message: str, history: list[Message], api_key: str | None) -> AsyncGenerator[list[Message]]:
        """Stream the api's reply to `message`; Stop (task cancel or generator close) ends the job."""
        session = client.with_key(api_key)
        view = ReplyView()
        stream = None
        try:
            stream = await session.open_chat(to_openai(history, message))
            log.info("reply started", extra={"job_id": stream.job_id})
            async for event in stream.events():
                if view.apply(event):
                    yield view.messages()
            log.info("reply finished", extra={"job_id": stream.job_id})
        except ApiError as exc:
            log.info("reply failed", extra={"job_id": stream and stream.job_id, "code": exc.code})
            if isinstance(exc, SessionEnded):
                raise  # for the page to sign in again, not for this reply to show
            view.fail(exc.message)
            yield view.messages()
        except Exception:
            log.exception("reply crashed", extra={"job_id": stream and stream.job_id})
            view.fail(UNEXPECTED)
            yield view.messages()
        finally:  # also on Stop: Gradio cancels the task, then closes this generator
            if stream is not None:
                await stream.aclose()
                if not stream.finished and stream.job_id:
                    log.info("reply stopped; cancelling its job", extra={"job_id": stream.job_id})
                    await session.cancel(stream.job_id)

    return reply


def make_chat(client: HearthClient) -> Callable[[str, list[Message], str | None], AsyncIterator[tuple[list[Message], Any]]]:
    """`make_reply`'s reply, plus a second output: the message to sign in again with, once the
    api no longer accepts the session's token (Gradio's `skip()` otherwise)."""
    stream_reply = make_reply(client)

    async def reply(message: str, history: list[Message], token: str | None) -> AsyncIterator[tuple[list[Message], Any]]:
        try:
            async with aclosing(stream_reply(message, history, token)) as shown:  # closed on Stop too
                async for messages in shown:
                    yield messages, gr.skip()
        except SessionEnded as exc:
            yield [note(f"⚠️ {exc.message}")], exc.message

    return reply


def build_app(client: HearthClient) -> gr.Blocks:
    with gr.Blocks(title="Hearth", analytics_enabled=False, fill_height=True) as app:
        token = gr.State(None)  # this browser session's token from the sign-in; None with auth off
        ended = gr.State(None)
        form = signin_form()
        with gr.Column(visible=False, scale=1, elem_id="hearth-main") as main:
            with gr.Row(equal_height=True):
                who = gr.Markdown("", elem_id="hearth-who")
                sign_out = gr.Button("Sign out", size="sm", scale=0, min_width=100, visible=False, elem_id="hearth-sign-out")
            with gr.Tabs(elem_classes="hearth-tabs") as tabs:
                with gr.Tab("Chat", id="chat", scale=1):
                    chat = gr.ChatInterface(
                        make_chat(client),
                        additional_inputs=[token],
                        additional_outputs=[ended],
                        title="Hearth",
                        chatbot=gr.Chatbot(label="Hearth", scale=1, autoscroll=True),
                        concurrency_limit=CONCURRENCY_LIMIT,
                        analytics_enabled=False,
                        fill_height=True,
                    )
                batches = batch_tab(client, token, tabs)
                status = status_tab(client, token, tabs)
        wire_signin(app, client, Page(token, ended, form, main, who, sign_out, chat, tabs, status, batches))
    app.queue(default_concurrency_limit=CONCURRENCY_LIMIT)
    return app
