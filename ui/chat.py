"""The Chat tab's behaviour: the user's conversations in a sidebar, and the open one's messages.

Conversations live in the api (`/v1/conversations`); each turn sends its question and names
its conversation, whose stored messages are the history, so the api stores the question and,
when the job ends, the whole answer, whether or not this page is still watching. Regenerate and
edit are one turn that replaces a stored question and all after it (`replace_from`). Nothing
is lost on a reload or a switch: opening a conversation whose answer is still being written
(`hearth_job_id`) follows that job's events from its start.

`ChatController` holds the handlers, each a short method over one session's `ChatSession`;
`wire_chat` only says which event runs which handler.

Streaming events and how they end each other: a turn (send, regenerate, edit) streams its
answer into the chat; every event that shows a conversation (opening one, a new chat, a delete,
signing in) is followed by `follow`, which streams the answer under way, if any, and then makes
the input ready. Each showing gets a ticket; a follower whose ticket is no longer the session's
steps aside at its next update (Gradio's `cancels` can only name events made before, and the
follower of one showing must not outlive the next). Stop cancels both kinds of stream and the
job (closing a stream never does: the answer goes on and is stored, so a reload finds it).
"""

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import gradio as gr

from hearth.documents import DocumentRef
from hearth.metadata import METADATA_VALUE_CHARS
from ui.attachments import literal, without_chips
from ui.chat_layout import FOLD_ON_PHONE, SAVE_DOWNLOAD, ChatPanel, Updates, busy, on_page, picker, ready
from ui.chat_session import (
    SETTINGS_KEYS,
    TITLE_KEY,
    ChatSession,
    model_choice,
    settings_metadata,
    shown_items,
    title_of,
    turn_messages,
    turn_params,
)
from ui.client import ApiError, HearthClient, SessionEnded
from ui.reply import Message, followed_reply, is_note, new_reply, note, plain_text
from ui.untrusted import defused

log = logging.getLogger(__name__)

READING = "📎 Reading the attached files…"
QUIET: dict[str, Any] = {"show_progress": "hidden", "api_visibility": "private"}


class ChatController:
    """The chat page's handlers. Every one gets the session's `ChatSession` and its token; the
    page's parts are `panel`'s, and `ended` takes the message of a session the api ended."""

    def __init__(self, client: HearthClient, panel: ChatPanel, ended: gr.State):
        self.client, self.p, self.ended = client, panel, ended

    def nothing(self) -> Updates:
        """No update: Gradio reads {} as "no outputs"."""
        return {self.ended: gr.skip()}

    async def choices(self, session: HearthClient, query: str | None) -> list[tuple[str, str]]:
        found = await session.conversations(query.strip() if query and query.strip() else None)
        return [(title_of(c), c["id"]) for c in found]

    async def listing(self, session: HearthClient, query: str | None, chosen: str | None) -> gr.Radio:
        return gr.Radio(choices=await self.choices(session, query), value=chosen)

    async def served(self, session: HearthClient) -> list[tuple[str, str]]:
        """The models to choose from; none when the api cannot say now (the picker keeps the
        server's default); SessionEnded when the session has."""
        try:
            return [model_choice(m) for m in await session.models()]
        except SessionEnded:
            raise
        except ApiError:
            return []

    # Showing a conversation, and following its answer under way

    async def open(self, token: str | None, chat: ChatSession, conv_id: str | None) -> Updates:
        """Shows conversation `conv_id` (None: a new chat); its follower makes the input ready.
        Shown at once (what streamed for the last one steps aside), its messages once read."""
        ticket, session = chat.show(conv_id, []), self.client.with_key(token)
        try:
            if conv_id is None:
                metadata = await new_chat_settings(session)
            else:
                items, conv = await session.items(conv_id), await session.conversation(conv_id)
                metadata = conv.get("metadata", {})
            served = await self.served(session)
        except SessionEnded as exc:
            return {self.ended: exc.message}
        except ApiError as exc:
            log.info("conversation not opened", extra={"code": exc.code})
            chat.show(None, [note(f"⚠️ {exc.message}")])
            metadata, served = {}, []
        else:
            if not chat.current(ticket):
                return self.nothing()  # another one was opened meanwhile
            chat.messages = [] if conv_id is None else shown_items(items)
        chat.showing_out()
        return self.p.opened(chat, metadata, served)

    async def new_chat(self, token: str | None, chat: ChatSession) -> Updates:
        return await self.open(token, chat, None)

    async def enter(self, token: str | None, chat: ChatSession, saved: str | None, signed_in: bool) -> Updates:
        """Once signed in: the sidebar, and the conversation open before a reload (else a new chat)."""
        if not signed_in:
            return self.nothing()
        session = self.client.with_key(token)
        try:
            found = await self.choices(session, None)
        except SessionEnded as exc:
            return {self.ended: exc.message}
        except ApiError as exc:
            return {self.p.chatbot: [note(f"⚠️ {exc.message}")], self.p.textbox: ready("")}
        chosen = saved if saved in [value for _, value in found] else None
        return {**await self.open(token, chat, chosen), self.p.sidebar: gr.Sidebar(visible=True),
                self.p.listing: gr.Radio(choices=found, value=chosen)}

    async def follow(self, token: str | None, chat: ChatSession) -> AsyncIterator[Updates]:
        """The shown conversation's answer under way, if any, written out as it grows; then the
        input is ready. Nothing once the page shows something else."""
        ticket = chat.to_follow()
        if ticket is None:
            yield self.nothing()
            return
        async for update in self.following(token, chat, ticket):
            yield update
        yield {self.p.textbox: ready()} if chat.current(ticket) else self.nothing()

    async def following(self, token: str | None, chat: ChatSession, ticket: str) -> AsyncIterator[Updates]:
        if chat.conv_id is None:
            return
        session, conv_id = self.client.with_key(token), chat.conv_id
        try:
            items, conv = await session.items(conv_id), await session.conversation(conv_id)
        except ApiError:
            return  # opening it said why already
        job_id, shown = conv.get("hearth_job_id"), shown_items(items)
        if not job_id or not shown or shown[-1]["role"] != "user" or not chat.current(ticket):
            return  # none, filed between the two reads (the items have it), or another one is open now
        chat.messages = shown
        yield {self.p.textbox: busy(), self.p.chatbot: on_page(chat)}  # every yield names the chatbot: Gradio streams a generator's outputs as diffs
        try:
            async for messages in followed_reply(session, job_id):
                if not chat.current(ticket):
                    return
                chat.messages = [*shown, *messages]
                yield {self.p.chatbot: on_page(chat)}
        except SessionEnded as exc:
            yield {self.p.chatbot: [note(f"⚠️ {exc.message}")], self.ended: exc.message}

    # A turn: what is asked is taken first (without the queue), then answered

    def take(self, chat: ChatSession, message: str, attached: list[str] | None) -> Updates:
        """A message, with the files attached to it; files without a message stay attached."""
        asked = bool(message.strip())
        chat.asked, chat.replacing, chat.files, chat.uploads = message, None, [], (attached or []) if asked else []
        return {self.p.textbox: busy(), self.p.attach: None} if asked else {self.p.textbox: busy()}

    def take_last(self, chat: ChatSession) -> Updates:
        """Regenerate: the last question again (with its documents), in place of itself and its answer."""
        last = max((n for n, m in enumerate(chat.messages) if m.get("role") == "user" and not is_note(m)), default=None)
        if last is None:
            chat.asked = ""
            return self.nothing()
        chat.asked = plain_text(chat.messages[last].get("content"))
        return self.shown_up_to(chat, last)

    def take_edit(self, chat: ChatSession, edit: gr.EditData) -> Updates:
        """Edit and resend: the edited question (with the edited one's documents) replaces it and all that followed."""
        index = edit.index if isinstance(edit.index, int) else edit.index[0]
        edited = without_chips(str(edit.value), chat.messages[index].get("files") or []) if index < len(chat.messages) else edit.value
        chat.asked = plain_text(edited)
        return self.shown_up_to(chat, index)

    def shown_up_to(self, chat: ChatSession, index: int) -> Updates:
        """The chat shown before message `index`; the turn replaces the first stored question from
        there on (one the api never stored, refused or failed, has no id) and all after it, and
        attaches the documents that question did."""
        chat.files, chat.uploads = list(chat.messages[index].get("files") or []), []
        chat.replacing = next((m["id"] for m in chat.messages[index:] if m.get("role") == "user" and m.get("id")), None)
        chat.messages = chat.messages[:index]
        return {self.p.chatbot: on_page(chat), self.p.textbox: busy()}

    async def answer(self, token: str | None, chat: ChatSession, query: str, model: str | None, system: str,
                     temperature: float | None, max_tokens: float | None) -> AsyncIterator[Updates]:
        """Sends what was taken after the chat shown and writes the answer out as it streams."""
        asked, replacing, shown, files, uploads = chat.asked, chat.replacing, chat.messages, chat.files, chat.uploads
        if not asked.strip():
            yield {self.p.chatbot: on_page(chat)}
            return
        session = self.client.with_key(token)
        # Until the api stores the question under an id of its own, it stands for what it replaces
        # (still stored if the turn is refused); its files show by name while they are sent.
        question: Message = {"role": "user", "content": asked, "id": replacing,
                             "files": [*files, *(DocumentRef(document_id="", filename=Path(path).name) for path in uploads)]}
        turn, showing = [*shown, question], chat.ticket
        chat.messages = [*turn, *([note(READING)] if uploads else [])]
        yield {self.p.chatbot: on_page(chat)}
        conv_id = chat.conv_id
        try:
            question["files"] = [*files, *await self.uploaded(session, uploads)]
            if uploads and chat.current(showing):
                chat.messages = turn  # read: the note goes
            conv_id = await self.turn_in(session, chat, turn, settings_metadata(model, system, temperature, max_tokens))
            if conv_id is None:
                return
            yield {self.p.chatbot: on_page(chat), self.p.saved_conv: conv_id}
            async for messages in new_reply(session, turn_messages(system, asked, question["files"]), conv_id, replacing, question,
                                            **turn_params(model, temperature, max_tokens)):
                if not chat.shows(conv_id):
                    return  # the answer goes on, and is stored
                chat.messages = [*turn, *messages]
                yield {self.p.chatbot: on_page(chat)}
            yield {self.p.chatbot: on_page(chat), **await self.refreshed(session, query, conv_id)}
        except SessionEnded as exc:
            yield {self.p.chatbot: [note(f"⚠️ {exc.message}")], self.ended: exc.message}
        except ApiError as exc:
            if chat.shows(conv_id):
                chat.messages = [*turn, note(f"⚠️ {exc.message}")]
                yield {self.p.chatbot: on_page(chat)}

    async def uploaded(self, session: HearthClient, paths: list[str]) -> list[DocumentRef]:
        """The files at `paths` (Gradio's copies of what the person attached), sent to the api as
        their documents, and deleted here. A file the api refuses (too large, a scan, a type it
        cannot read) is an `ApiError` saying which and why; those sent before it are deleted
        again, so a refused message attaches nothing and sends nothing."""
        refs: list[DocumentRef] = []
        try:
            for path in paths:
                name, data = Path(path).name, await asyncio.to_thread(Path(path).read_bytes)
                try:
                    file = await session.upload_document(name, data)
                except SessionEnded:
                    raise
                except ApiError as exc:
                    raise ApiError(f"{literal(name)} was not attached, and nothing was sent: {defused(exc.message)}", exc.code) from None
                refs.append(DocumentRef(document_id=file["id"], filename=file.get("filename") or name))
        except ApiError:
            for ref in refs:
                with contextlib.suppress(ApiError):
                    await session.delete_file(ref.document_id)
            raise
        finally:
            await asyncio.to_thread(forget, paths)
        return refs

    async def turn_in(self, session: HearthClient, chat: ChatSession, turn: list[Message], settings: dict[str, str]) -> str | None:
        """The conversation that `turn` goes on: the open one, or a new chat's, created (with its
        settings). None when the page shows another chat by then."""
        if chat.conv_id is not None:
            return chat.conv_id
        conv_id: str = (await session.new_conversation(settings))["id"]
        if not chat.shows(None):
            return None
        chat.show(conv_id, turn)
        return conv_id

    async def refreshed(self, session: HearthClient, query: str, conv_id: str) -> Updates:
        """After an answer: the listing (a new title, this one on top) and the picker (the model
        used is loaded now). Cosmetic: a refusal (after Sign out the token is gone already) skips them."""
        try:
            return {self.p.listing: await self.listing(session, query, conv_id),
                    self.p.model: picker([model_choice(m) for m in await session.models()])}
        except ApiError:
            return {}

    async def stop(self, token: str | None, chat: ChatSession) -> gr.Textbox:
        await cancel_answer(self.client.with_key(token), chat.conv_id)
        return ready()

    # The sidebar

    async def search(self, token: str | None, chat: ChatSession, query: str) -> gr.Radio:
        """Also runs when the page clears the box (signing out): a refusal then is no news."""
        try:
            return await self.listing(self.client.with_key(token), query, chat.conv_id)
        except ApiError:
            return gr.skip()

    async def warned(self, work: Awaitable[Updates]) -> Updates:
        """`work`'s updates; a session that ended signs the page out, any other refusal shows as a warning."""
        try:
            return await work
        except SessionEnded as exc:
            return {self.ended: exc.message}
        except ApiError as exc:
            gr.Warning(exc.message)
            return self.nothing()

    async def rename(self, token: str | None, chat: ChatSession, title: str, query: str) -> Updates:
        conv_id = chat.conv_id
        if conv_id is None or not title.strip():
            return self.nothing()
        session = self.client.with_key(token)

        async def renamed() -> Updates:
            conv = await session.conversation(conv_id)
            await session.set_metadata(conv_id, {**conv.get("metadata", {}), TITLE_KEY: title.strip()[:METADATA_VALUE_CHARS]})
            return {self.p.listing: await self.listing(session, query, conv_id)}

        return await self.warned(renamed())

    async def save_settings(self, token: str | None, chat: ChatSession, model: str | None, system: str,
                            temperature: float | None, max_tokens: float | None) -> None:
        """Kept in the open conversation's metadata (a new chat takes them when it is created)."""
        if chat.conv_id is None:
            return
        session = self.client.with_key(token)
        try:
            metadata = (await session.conversation(chat.conv_id)).get("metadata", {})
            kept = {k: v for k, v in metadata.items() if k not in SETTINGS_KEYS}
            await session.set_metadata(chat.conv_id, {**kept, **settings_metadata(model, system, temperature, max_tokens)})
        except ApiError as exc:
            gr.Warning(exc.message)

    async def delete(self, token: str | None, chat: ChatSession, query: str) -> Updates:
        conv_id = chat.conv_id
        if conv_id is None:
            return self.nothing()
        session = self.client.with_key(token)

        async def deleted() -> Updates:
            await cancel_answer(session, conv_id)
            await session.delete_conversation(conv_id)
            return {**await self.open(token, chat, None), self.p.listing: await self.listing(session, query, None)}

        return await self.warned(deleted())

    async def save_defaults(self, token: str | None, model: str | None, system: str, temperature: float | None,
                            max_tokens: float | None) -> Updates:
        async def saved() -> Updates:
            await self.client.with_key(token).set_chat_defaults(settings_metadata(model, system, temperature, max_tokens))
            gr.Info("New chats will start with these settings.")
            return self.nothing()

        return await self.warned(saved())

    async def export(self, token: str | None, name: str, media_type: str, fetch: Callable[[HearthClient], Awaitable[bytes]]) -> Updates:
        async def exported() -> Updates:
            return {self.p.download: download(name, media_type, await fetch(self.client.with_key(token)))}

        return await self.warned(exported())

    async def export_all(self, token: str | None) -> Updates:
        """Every conversation, as the JSON file that import takes."""
        return await self.export(token, "hearth-conversations.json", "application/json", lambda s: s.export_all())

    async def export_chat(self, token: str | None, chat: ChatSession, title: str) -> Updates:
        conv_id = chat.conv_id
        if conv_id is None:
            gr.Info("This chat is empty: nothing to export yet.")
            return self.nothing()
        return await self.export(token, f"{file_name(title)}.md", "text/markdown", lambda s: s.export_markdown(conv_id))

    async def import_(self, token: str | None, chat: ChatSession, path: str | None, query: str) -> Updates:
        if path is None:
            return self.nothing()
        exported = await asyncio.to_thread(Path(path).read_bytes)
        Path(path).unlink(missing_ok=True)  # the ui keeps nobody's conversations on its disk
        session = self.client.with_key(token)
        try:
            result = await session.import_conversations(exported)
            found = await self.listing(session, query, chat.conv_id)
        except SessionEnded as exc:
            return {self.ended: exc.message}
        except ApiError as exc:
            return {self.p.import_result: f"⚠️ Nothing was imported from this file: {exc.message}", self.p.importer: None}
        return {self.p.import_result: imported_line(result), self.p.listing: found, self.p.importer: None}


def wire_chat(client: HearthClient, panel: ChatPanel, token: gr.State, ended: gr.State, signed_in: gr.State,
              signed_in_events: list[Any], concurrency: int) -> list[Any]:
    """Which event runs which of `ChatController`'s handlers; after each of `signed_in_events`
    the page shows the conversation of `saved_conv` (open before a reload), or a new chat.
    Returns the events that answer (send, regenerate, edit), for what follows an answer."""
    c, p = ChatController(client, panel, ended), panel
    chat = [token, p.session]
    answers = []
    for trigger, take, inputs in ((p.textbox.submit, c.take, [p.textbox, p.attach]), (p.chatbot.retry, c.take_last, []),
                                  (p.chatbot.edit, c.take_edit, [])):
        taken = trigger(take, inputs=[p.session, *inputs], outputs=[p.chatbot, p.textbox, p.attach, ended], queue=False, **QUIET)
        answers.append(taken.success(c.answer, inputs=[*chat, p.search, *p.settings()], outputs=[p.chatbot, p.saved_conv, p.listing, p.model, ended],
                                     concurrency_limit=concurrency, **QUIET))
    for event in answers:
        event.then(ready, outputs=[p.textbox], queue=False, **QUIET)

    shows = [*p.outputs(), ended]
    opened = [p.listing.input(c.open, inputs=[*chat, p.listing], outputs=shows, cancels=answers, **QUIET),
              p.new.click(c.new_chat, inputs=chat, outputs=shows, cancels=answers, **QUIET),
              *(event.then(c.enter, inputs=[*chat, p.saved_conv, signed_in], outputs=shows, **QUIET) for event in signed_in_events)]
    for event in opened:
        event.then(None, js=FOLD_ON_PHONE)
    deleted = p.delete.click(c.delete, inputs=[*chat, p.search], outputs=shows, cancels=answers, **QUIET)
    # "multiple": a follower of the last showing may still be stepping aside when the same event shows another.
    followers = [showing.then(c.follow, inputs=chat, outputs=[p.chatbot, p.textbox, ended], concurrency_limit=concurrency,
                              trigger_mode="multiple", **QUIET) for showing in [*opened, deleted]]
    p.textbox.stop(c.stop, inputs=chat, outputs=[p.textbox], cancels=[*answers, *followers], **QUIET)

    gr.on([p.search.submit, p.search.change], c.search, inputs=[*chat, p.search], outputs=[p.listing],
          trigger_mode="always_last", **QUIET)
    gr.on([p.rename.click, p.title.submit], c.rename, inputs=[*chat, p.title, p.search], outputs=[p.listing, ended], **QUIET)
    gr.on([p.model.input, p.system.blur, p.temperature.blur, p.max_tokens.blur], c.save_settings, inputs=[*chat, *p.settings()], **QUIET)
    p.save_defaults.click(c.save_defaults, inputs=[token, *p.settings()], outputs=[ended], **QUIET)
    for exporting in (p.export_all.click(c.export_all, inputs=[token], outputs=[p.download, ended], **QUIET),
                      p.export_chat.click(c.export_chat, inputs=[*chat, p.title], outputs=[p.download, ended], **QUIET)):
        saved = exporting.then(None, inputs=[p.download], outputs=[p.download], js=SAVE_DOWNLOAD, **QUIET)
        saved.then(lambda: "", outputs=[p.download], queue=False, **QUIET)
    p.importer.upload(c.import_, inputs=[*chat, p.importer, p.search], outputs=[p.import_result, p.listing, p.importer, ended], **QUIET)
    return answers


async def new_chat_settings(session: HearthClient) -> dict[str, str]:
    """The user's defaults for a new chat; none when the api cannot say (the chat then takes
    the server's); SessionEnded when the session has."""
    try:
        defaults = await session.chat_defaults()
    except SessionEnded:
        raise
    except ApiError:
        return {}
    return {k: v for k, v in defaults.items() if k in SETTINGS_KEYS}


def imported_line(result: dict[str, Any]) -> str:
    count = result["conversations"]
    return (f"Imported {count} conversation{'s' * (count != 1)}: {result['created']} new, "
            f"{result['items_added']} message{'s' * (result['items_added'] != 1)} added.")


def download(name: str, media_type: str, content: bytes) -> str:
    """What SAVE_DOWNLOAD takes."""
    return json.dumps({"name": name, "type": media_type, "text": content.decode()})


def file_name(title: str) -> str:
    """A conversation's title as a file name any system takes."""
    return re.sub(r"[^\w\- ]+", "", title).strip()[:60] or "conversation"


def forget(paths: list[str]) -> None:
    """Deletes Gradio's copies of attached files: the ui keeps nobody's documents on its disk."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


async def cancel_answer(session: HearthClient, conv_id: str | None) -> None:
    """Stops the answer the conversation is waiting for, if any (Stop, sign-out, delete)."""
    if conv_id is None:
        return
    try:
        job_id = (await session.conversation(conv_id)).get("hearth_job_id")
    except ApiError:
        return  # gone, or the session ended: nothing of this user's to stop
    if job_id:
        log.info("reply stopped; cancelling its job", extra={"job_id": job_id})
        await session.cancel(job_id)
