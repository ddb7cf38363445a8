"""One reply as the chat page shows it: the model's words as they stream, and "notes" around
them: the place in line while a request waits, a note when earlier messages had to be left out,
and errors in plain language. Notes are assistant messages with a metadata title, which Gradio
draws as a labelled box and which are never sent back to the model.
"""

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hearth.contract import ContextTrimmedEvent, LoadingEvent, QueuedEvent, StartedEvent
from ui.attachments import parts_read
from ui.client import ApiError, ChatEvent, ChatStream, Delta, Finished, HearthClient, SessionEnded
from ui.untrusted import defused

log = logging.getLogger(__name__)

UNEXPECTED = "Something went wrong in the chat page. Try again; if it keeps happening, check the ui's log."
CUT_SHORT = "The reply reached its length limit and was cut short."
EMPTY = "The model ended its reply without writing anything. Try rephrasing the message."

Message = dict[str, Any]


def queue_line(position: int, eta_s: float | None) -> str:
    line = f"You are #{position} in line"
    return line if eta_s is None else f"{line} (about {max(1, round(eta_s))} s)"


def trimmed_line(messages: int) -> str:
    if messages == 1:
        return "1 earlier message was left out to fit the model's memory"
    return f"{messages} earlier messages were left out to fit the model's memory"


def note(title: str, content: str = "") -> Message:
    """Gradio renders a title as Markdown, and one may carry untrusted text (the name of a
    function call in an imported conversation, an error's message): defused as messages are."""
    return {"role": "assistant", "content": content, "metadata": {"title": defused(title)}}


def is_note(message: Message) -> bool:
    return bool((message.get("metadata") or {}).get("title"))


def plain_text(content: Any) -> str:
    """Plain text of a Gradio 6 message: a string, or a list of blocks (files are skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, list):
        parts = [b if isinstance(b, str) else b.get("text") for b in content if isinstance(b, (str, dict))]
        return "\n".join(p for p in parts if isinstance(p, str) and p)
    return ""


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
        if isinstance(event, QueuedEvent):
            self.waiting = queue_line(event.position, event.eta_s)
        elif isinstance(event, StartedEvent):
            if self.waiting is None:
                return False
            self.waiting = None
        elif isinstance(event, LoadingEvent):
            self.waiting = f"Loading {event.model}…"
        elif isinstance(event, ContextTrimmedEvent):
            self.before.append(f"ℹ️ {trimmed_line(event.messages)}")
        elif isinstance(event, Delta):
            self.waiting = None
            self.text += event.text
        elif isinstance(event, Finished):
            self.waiting = None
            read = parts_read(event.citations)
            self.after.extend([read] if read else [])
            if event.finish_reason == "length":
                self.after.append(f"ℹ️ {CUT_SHORT}")
            elif not self.text:
                self.after.append(f"ℹ️ {EMPTY}")
            elif not read:
                return False
        return True


async def stream_reply(open_: Callable[[], Awaitable[Any]], opened: str = "reply started") -> AsyncGenerator[list[Message]]:
    """The reply of the stream `open_` opens (a chat turn, or a job followed again), as the
    page's messages after each change. Closing this generator (Stop, another conversation
    opened, the page gone) only closes the stream: a conversation's job goes on and the api
    stores its answer; Stop cancels the job itself. `SessionEnded` is raised for the page to
    sign in again; any other failure is shown as a note."""
    view = ReplyView()
    stream = None
    try:
        stream = await open_()
        log.info(opened, extra={"job_id": stream.job_id})
        async for event in stream.events():
            if view.apply(event):
                yield view.messages()
        log.info("reply finished", extra={"job_id": stream.job_id})
    except ApiError as exc:
        log.info("reply failed", extra={"job_id": stream and stream.job_id, "code": exc.code})
        if isinstance(exc, SessionEnded):
            raise
        view.fail(exc.message)
        yield view.messages()
    except Exception:
        log.exception("reply crashed", extra={"job_id": stream and stream.job_id})
        view.fail(UNEXPECTED)
        yield view.messages()
    finally:
        if stream is not None:
            await stream.aclose()


def new_reply(client: HearthClient, messages: list[dict[str, Any]], conversation: str | None = None,
              replace_from: str | None = None, question: Message | None = None, **params: Any) -> AsyncGenerator[list[Message]]:
    """A new chat turn's reply (stored in `conversation` by the api, if given, in place of its
    message `replace_from` and all after it, if given). `question`, the page's message of what
    was asked, gets the id the api stored it under (what a later `replace_from` names)."""
    async def open_() -> ChatStream:
        stream = await client.open_chat(messages, conversation, replace_from, **params)
        if question is not None and stream.item_id:
            question["id"] = stream.item_id
        return stream

    return stream_reply(open_)


def followed_reply(client: HearthClient, job_id: str) -> AsyncGenerator[list[Message]]:
    """The reply job `job_id` is writing, from its first event: after a reload, or back in its conversation."""
    return stream_reply(lambda: client.follow(job_id), "reply resumed")
