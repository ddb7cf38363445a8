"""The Chat tab: the user's conversations in a sidebar, and the open one's messages.

Conversations live in the api (`/v1/conversations`); each turn names its conversation, so the
api stores the question and, when the job ends, the whole answer, whether or not this page is
still watching. Nothing is lost on a reload or a switch: opening a conversation whose answer is
still being written (`hearth_job_id`) follows that job's events from its start.

Streaming events and how they end each other: a turn (send, regenerate, edit) streams its
answer into the chat; every event that shows a conversation (opening one, a new chat, a delete,
signing in) is followed by `follow`, which streams the answer under way, if any, and then makes
the input ready. Each showing gets a ticket; a follower whose ticket is no longer the page's
steps aside at its next update (Gradio's `cancels` can only name events made before, and the
follower of one showing must not outlive the next). Stop cancels both kinds of stream and the
job (closing a stream never does: the answer goes on and is stored, so a reload finds it).
"""

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.blocks import Block

from ui.client import ApiError, HearthClient, SessionEnded
from ui.reply import Message, followed_reply, is_note, new_reply, note, to_openai

log = logging.getLogger(__name__)

NEW_CHAT = "New chat"
STOPPED = "This answer was stopped before it was finished."
SYSTEM_KEY, TEMPERATURE_KEY, MAX_TOKENS_KEY = "system", "temperature", "max_tokens"  # per-conversation settings in its metadata
SETTINGS_KEYS = (SYSTEM_KEY, TEMPERATURE_KEY, MAX_TOKENS_KEY)
SYSTEM_CHARS = 512  # a metadata value's bound (OpenAI's)

Updates = dict[Block, Any]

# On a phone-sized screen the sidebar would cover the chat: fold it once signed in and after
# a conversation is chosen (its toggle stays at the edge to open it again). It is drawn open a
# moment after the update that shows it, hence the short watch.
FOLD_ON_PHONE = """() => {
  if (window.innerWidth >= 768) return;
  let tries = 0;
  const watch = setInterval(() => {
    const bar = document.querySelector('#hearth-sidebar');
    if (bar?.classList.contains('open')) bar.querySelector('.toggle-button')?.click();
    if (bar?.classList.contains('open') === false || ++tries > 40) clearInterval(watch);
  }, 50);
}"""


# An export reaches the browser as {name, type, text} in a hidden textbox; this saves it as a
# file there (nothing is written on the ui's disk) and empties the textbox (the ui's copy of
# its value is emptied by the step after).
SAVE_DOWNLOAD = """(file) => {
  if (!file) return '';
  const {name, type, text} = JSON.parse(file);
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([text], {type}));
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  return '';
}"""


def download(name: str, media_type: str, content: bytes) -> str:
    """What SAVE_DOWNLOAD takes."""
    return json.dumps({"name": name, "type": media_type, "text": content.decode()})


def file_name(title: str) -> str:
    """A conversation's title as a file name any system takes."""
    return re.sub(r"[^\w\- ]+", "", title).strip()[:60] or "conversation"


def title_of(conv: dict[str, Any]) -> str:
    return str(conv.get("metadata", {}).get("title") or NEW_CHAT)


def shown_items(items: list[dict[str, Any]]) -> list[Message]:
    """Stored messages as the chat shows them; an answer cut short says so."""
    shown: list[Message] = []
    for item in items:
        if item.get("type") != "message" or item.get("role") not in ("user", "assistant"):
            continue
        shown.append({"role": item["role"], "content": "\n".join(p.get("text", "") for p in item.get("content", []))})
        if item["role"] == "assistant" and item.get("status") == "incomplete":
            shown.append(note(f"ℹ️ {STOPPED}"))
    return shown


def settings_metadata(system: str | None, temperature: float | None, max_tokens: float | None) -> dict[str, str]:
    """The chat's settings as metadata values (strings); unset ones are left out."""
    meta = {SYSTEM_KEY: (system or "").strip()[:SYSTEM_CHARS], TEMPERATURE_KEY: "" if temperature is None else f"{temperature:g}",
            MAX_TOKENS_KEY: "" if not max_tokens else str(int(max_tokens))}
    return {k: v for k, v in meta.items() if v}


def turn_params(temperature: float | None, max_tokens: float | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if temperature is not None:
        params["temperature"] = float(temperature)
    if max_tokens:
        params["max_tokens"] = int(max_tokens)
    return params


def turn_messages(system: str | None, shown: list[Message], asked: str) -> list[dict[str, str]]:
    prompt = [{"role": "system", "content": system.strip()}] if system and system.strip() else []
    return prompt + to_openai(shown, asked)


def _number(metadata: dict[str, str], key: str) -> float | None:
    try:
        return float(metadata[key])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class ChatPanel:
    conv: gr.State  # the open conversation's id; None for a new chat not sent yet
    saved_conv: gr.BrowserState  # the same, kept by the browser for a reload
    ticket: gr.State  # this showing of the open conversation (see the module's doc)
    asked: gr.State  # the message being sent
    sidebar: gr.Sidebar
    new: gr.Button
    search: gr.Textbox
    listing: gr.Radio
    title: gr.Textbox
    rename: gr.Button
    delete: gr.Button
    system: gr.Textbox
    temperature: gr.Number
    max_tokens: gr.Number
    save_defaults: gr.Button
    export_chat: gr.Button
    export_all: gr.Button
    importer: gr.UploadButton
    import_result: gr.Markdown
    download: gr.Textbox  # hidden: a file for the browser to save (see SAVE_DOWNLOAD)
    chatbot: gr.Chatbot
    textbox: gr.Textbox

    def settings(self) -> list[Block]:
        return [self.system, self.temperature, self.max_tokens]

    def outputs(self) -> list[Block]:
        return [self.conv, self.saved_conv, self.ticket, self.sidebar, self.search, self.listing, self.title, *self.settings(),
                self.import_result, self.download, self.chatbot, self.textbox]

    def opened(self, conv_id: str | None, shown: list[Message], metadata: dict[str, str]) -> Updates:
        return {self.conv: conv_id, self.saved_conv: conv_id, self.chatbot: shown,
                self.listing: gr.Radio(value=conv_id), self.title: metadata.get("title", ""),
                self.system: metadata.get(SYSTEM_KEY, ""), self.temperature: _number(metadata, TEMPERATURE_KEY),
                self.max_tokens: _number(metadata, MAX_TOKENS_KEY)}

    def reset(self) -> Updates:
        """Nothing of the last user stays on the page (the browser's `saved_conv` is the page's to keep or forget)."""
        cleared: Updates = {**self.opened(None, [], {}), self.listing: gr.Radio(choices=[], value=None), self.search: "",
                            self.import_result: "", self.download: "",
                   self.textbox: waiting(), self.sidebar: gr.Sidebar(visible=False), self.ticket: None}
        del cleared[self.saved_conv]
        return cleared


def busy() -> gr.Textbox:
    """The input while an answer streams: Stop instead of Send."""
    return gr.Textbox(value="", submit_btn=False, stop_btn=True, interactive=False)


def waiting() -> gr.Textbox:
    """The input until the signed-in chat is set up (a message sent earlier would race it)."""
    return gr.Textbox(value="", submit_btn=True, stop_btn=False, interactive=False)


def ready(value: str | None = None) -> gr.Textbox:
    return gr.Textbox(value=value, submit_btn=True, stop_btn=False, interactive=True)


def chat_sidebar() -> dict[str, Block]:
    """The sidebar's parts, by their `ChatPanel` names (added where the page is being built)."""
    with gr.Sidebar(label="Conversations", open=True, visible=False, elem_id="hearth-sidebar") as sidebar:
        new = gr.Button("New chat", variant="primary", size="sm", elem_id="hearth-new-chat")
        search = gr.Textbox(placeholder="Search conversations", show_label=False, max_lines=1, elem_id="hearth-search")
        listing = gr.Radio(choices=[], value=None, show_label=False, elem_id="hearth-conversations")
        with gr.Accordion("This chat", open=False, elem_id="hearth-this-chat"):
            title = gr.Textbox(label="Title", max_lines=1, elem_id="hearth-title")
            with gr.Row():
                rename = gr.Button("Rename", size="sm", elem_id="hearth-rename")
                delete = gr.Button("Delete", size="sm", variant="stop", elem_id="hearth-delete")
            system = gr.Textbox(label="System prompt", lines=2, max_length=SYSTEM_CHARS, elem_id="hearth-system")
            temperature = gr.Number(label="Temperature (empty: the server's default)", minimum=0, maximum=2, step=0.1,
                                    value=None, elem_id="hearth-temperature")
            max_tokens = gr.Number(label="Longest answer, in tokens (empty: the server's default)", minimum=1, precision=0,
                                   value=None, elem_id="hearth-max-tokens")
            with gr.Row():
                save_defaults = gr.Button("Use for new chats", size="sm", elem_id="hearth-save-defaults")
                export_chat = gr.Button("Export (Markdown)", size="sm", elem_id="hearth-export-chat")
        with gr.Accordion("All chats", open=False, elem_id="hearth-all-chats"):
            with gr.Row():
                export_all = gr.Button("Export (JSON)", size="sm", elem_id="hearth-export-all")
                importer = gr.UploadButton("Import (JSON)", size="sm", file_types=[".json"], elem_id="hearth-import")
            import_result = gr.Markdown("", elem_id="hearth-import-result")
        download = gr.Textbox(visible="hidden", elem_id="hearth-download")
    return {"sidebar": sidebar, "new": new, "search": search, "listing": listing, "title": title, "rename": rename,
            "delete": delete, "system": system, "temperature": temperature, "max_tokens": max_tokens,
            "save_defaults": save_defaults, "export_chat": export_chat, "export_all": export_all, "importer": importer,
            "import_result": import_result, "download": download}


def chat_panel(sidebar: dict[str, Block], browser_key: str) -> ChatPanel:
    """The chat itself (added where the page is being built); the sidebar made by `chat_sidebar`."""
    chatbot = gr.Chatbot(label="Hearth", scale=1, autoscroll=True, editable="user", buttons=["copy"],
                         elem_id="hearth-chatbot", height="60vh")
    # Not editable until the signed-in chat is shown (its follower makes it ready): text typed
    # before would be cleared by that, or sent into the chat being replaced.
    textbox = gr.Textbox(placeholder="Message Hearth", show_label=False, submit_btn=True, stop_btn=False,
                         max_lines=8, autofocus=True, interactive=False, elem_id="hearth-input")
    return ChatPanel(conv=gr.State(None), saved_conv=gr.BrowserState(None, storage_key="hearth-conversation", secret=browser_key),
                     ticket=gr.State(None), asked=gr.State(""), chatbot=chatbot, textbox=textbox, **sidebar)  # type: ignore[arg-type]


def wire_chat(app: gr.Blocks, client: HearthClient, panel: ChatPanel, token: gr.State, ended: gr.State,
              signed_in: gr.State, signed_in_events: list[Any], concurrency: int) -> None:
    """The chat's events; after each of `signed_in_events` it shows the conversation of
    `saved_conv` (open before a reload), or a new chat."""
    p = panel
    quiet: dict[str, Any] = {"show_progress": "hidden", "api_visibility": "private"}
    # The conversation each browser session shows (by Gradio's session hash), and the ticket of
    # that showing. A reply streams into the chat only while it is still what the page shows.
    on_screen: dict[str, tuple[str | None, str]] = {}

    def show(request: gr.Request, conv_id: str | None) -> str:
        ticket = uuid.uuid4().hex
        on_screen[request.session_hash or ""] = (conv_id, ticket)
        return ticket

    def shown_here(request: gr.Request, conv_id: str | None) -> bool:
        return on_screen.get(request.session_hash or "", (None, ""))[0] == conv_id

    def still_shown(request: gr.Request, ticket: str | None) -> bool:
        return on_screen.get(request.session_hash or "", (None, ""))[1] == ticket

    def forget(request: gr.Request) -> None:
        on_screen.pop(request.session_hash or "", None)

    app.unload(forget)

    async def choices(session: HearthClient, query: str | None) -> list[tuple[str, str]]:
        found = await session.conversations(query.strip() if query and query.strip() else None)
        return [(title_of(c), c["id"]) for c in found]

    async def listing(session: HearthClient, query: str | None, chosen: str | None) -> gr.Radio:
        return gr.Radio(choices=await choices(session, query), value=chosen)

    async def follow(token_: str | None, conv_id: str | None, ticket: str | None, request: gr.Request) -> AsyncIterator[Updates]:
        """The shown conversation's answer under way, if any, written out as it grows; then the
        input is ready. Nothing once the page shows something else."""
        async for update in following(token_, conv_id, ticket, request):
            yield update
        yield {p.textbox: ready()} if still_shown(request, ticket) else {ended: gr.skip()}  # {} reads as no outputs

    async def following(token_: str | None, conv_id: str | None, ticket: str | None, request: gr.Request) -> AsyncIterator[Updates]:
        if conv_id is None:
            return
        session = client.with_key(token_)
        try:
            items, conv = await session.items(conv_id), await session.conversation(conv_id)
        except ApiError:
            return  # opening it said why already
        job_id, shown = conv.get("hearth_job_id"), shown_items(items)
        if not job_id or not shown or shown[-1]["role"] != "user" or not still_shown(request, ticket):
            return  # none, filed between the two reads (the items have it), or another one is open now
        yield {p.textbox: busy(), p.chatbot: shown}  # every yield names the chatbot: Gradio streams a generator's outputs as diffs
        try:
            async for messages in followed_reply(session, job_id):
                if not still_shown(request, ticket):
                    return
                yield {p.chatbot: [*shown, *messages]}
        except SessionEnded as exc:
            yield {p.chatbot: [note(f"⚠️ {exc.message}")], ended: exc.message}

    followers = []

    def then_follow(shown: Any) -> None:
        """After an event that shows a conversation. "multiple": a follower of the last showing
        may still be stepping aside when the same event shows another."""
        followers.append(shown.then(follow, inputs=[token, p.conv, p.ticket], outputs=[p.chatbot, p.textbox, ended],
                                    concurrency_limit=concurrency, trigger_mode="multiple", **quiet))

    async def answer(asked: str, shown: list[Message], token_: str | None, conv_id: str | None, query: str,
                     system: str, temperature: float | None, max_tokens: float | None, request: gr.Request) -> AsyncIterator[Updates]:
        """Sends `asked` after the chat shown (which is the truth: after a regenerate or an edit,
        stored messages past it are deleted first) and writes the answer out as it streams."""
        if not asked.strip():
            yield {p.chatbot: shown}
            return
        session = client.with_key(token_)
        turn = [*shown, {"role": "user", "content": asked}]
        yield {p.chatbot: turn}
        try:
            if conv_id is None:
                conv_id = (await session.new_conversation(settings_metadata(system, temperature, max_tokens)))["id"]
                if not shown_here(request, None):
                    return
                show(request, conv_id)
                yield {p.chatbot: turn, p.conv: conv_id, p.saved_conv: conv_id}
            else:
                await drop_after(session, conv_id, len(to_openai(shown, "")) - 1)
            replies = new_reply(session, turn_messages(system, shown, asked), conv_id, **turn_params(temperature, max_tokens))
            shown_now = turn
            async for messages in replies:
                if not shown_here(request, conv_id):
                    return  # the answer goes on, and is stored
                shown_now = [*turn, *messages]
                yield {p.chatbot: shown_now}
            try:
                refreshed = await listing(session, query, conv_id)  # a new title, this one on top
            except ApiError:
                refreshed = gr.skip()  # cosmetic; and after Sign out the token is gone already
            yield {p.chatbot: shown_now, p.listing: refreshed}
        except SessionEnded as exc:
            yield {p.chatbot: [note(f"⚠️ {exc.message}")], ended: exc.message}
        except ApiError as exc:
            yield {p.chatbot: [*turn, note(f"⚠️ {exc.message}")]}

    async def drop_after(session: HearthClient, conv_id: str, kept: int) -> None:
        stored = await session.items(conv_id)
        for item in stored[kept:]:
            await session.delete_item(conv_id, item["id"])

    def take(message: str) -> Updates:
        return {p.asked: message, p.textbox: busy()}

    def take_last(shown: list[Message]) -> Updates:
        """Regenerate: the last question again, its answer dropped."""
        last = max((n for n, m in enumerate(shown) if m.get("role") == "user" and not is_note(m)), default=None)
        if last is None:
            return {p.asked: ""}
        return {p.asked: to_openai([shown[last]], "")[0]["content"], p.chatbot: shown[:last], p.textbox: busy()}

    def take_edit(shown: list[Message], edit: gr.EditData) -> Updates:
        """Edit and resend: the edited question replaces it and all that followed."""
        index = edit.index if isinstance(edit.index, int) else edit.index[0]
        return {p.asked: to_openai([{"role": "user", "content": edit.value}], "")[0]["content"],
                p.chatbot: shown[:index], p.textbox: busy()}

    answer_inputs = [p.asked, p.chatbot, token, p.conv, p.search, *p.settings()]
    answer_outputs = [p.chatbot, p.conv, p.saved_conv, p.listing, ended]
    answers = []
    for trigger, first, inputs in ((p.textbox.submit, take, [p.textbox]), (p.chatbot.retry, take_last, [p.chatbot]),
                                   (p.chatbot.edit, take_edit, [p.chatbot])):
        started = trigger(first, inputs=inputs, outputs=[p.asked, p.chatbot, p.textbox], queue=False, **quiet)
        answers.append(started.success(answer, inputs=answer_inputs, outputs=answer_outputs, concurrency_limit=concurrency, **quiet))
    for event in answers:
        event.then(ready, outputs=[p.textbox], queue=False, **quiet)

    async def open_(token_: str | None, conv_id: str | None, request: gr.Request) -> Updates:
        """Shows conversation `conv_id` (None: a new chat); its follower makes the input ready."""
        ticket = show(request, conv_id)
        session = client.with_key(token_)
        try:
            if conv_id is None:
                return {**p.opened(None, [], await new_chat_settings(session)), p.ticket: ticket, p.textbox: waiting()}
            items, conv = await session.items(conv_id), await session.conversation(conv_id)
        except SessionEnded as exc:
            return {ended: exc.message}
        except ApiError as exc:
            log.info("conversation not opened", extra={"code": exc.code})
            return {**p.opened(None, [note(f"⚠️ {exc.message}")], {}), p.ticket: show(request, None), p.textbox: waiting()}
        return {**p.opened(conv_id, shown_items(items), conv.get("metadata", {})), p.ticket: ticket, p.textbox: waiting()}

    open_outputs = [*p.outputs(), ended]
    opened = p.listing.input(open_, inputs=[token, p.listing], outputs=open_outputs, cancels=answers, **quiet)
    opened.then(None, js=FOLD_ON_PHONE)
    then_follow(opened)

    async def new_chat(token_: str | None, request: gr.Request) -> Updates:
        return await open_(token_, None, request)

    opened = p.new.click(new_chat, inputs=[token], outputs=open_outputs, cancels=answers, **quiet)
    opened.then(None, js=FOLD_ON_PHONE)
    then_follow(opened)

    async def enter(token_: str | None, saved: str | None, is_signed_in: bool, request: gr.Request) -> Updates:
        """Once signed in: the sidebar, and the conversation open before a reload (else a new chat)."""
        if not is_signed_in:
            return {ended: gr.skip()}  # {} would read as no outputs
        session = client.with_key(token_)
        try:
            found = await choices(session, None)
        except SessionEnded as exc:
            return {ended: exc.message}
        except ApiError as exc:
            return {p.chatbot: [note(f"⚠️ {exc.message}")], p.textbox: ready("")}
        ids = [value for _, value in found]
        chosen = saved if saved in ids else None
        shown = await open_(token_, chosen, request)
        return {**shown, p.sidebar: gr.Sidebar(visible=True), p.listing: gr.Radio(choices=found, value=chosen)}

    for signed_in_event in signed_in_events:
        entered = signed_in_event.then(enter, inputs=[token, p.saved_conv, signed_in], outputs=open_outputs, **quiet)
        entered.then(None, js=FOLD_ON_PHONE)
        then_follow(entered)

    async def search(token_: str | None, query: str, chosen: str | None) -> gr.Radio:
        """Also runs when the page clears the box (signing out): a refusal then is no news."""
        try:
            return await listing(client.with_key(token_), query, chosen)
        except ApiError:
            return gr.skip()

    gr.on([p.search.submit, p.search.change], search, inputs=[token, p.search, p.conv], outputs=[p.listing],
          trigger_mode="always_last", **quiet)

    async def warned(work: Awaitable[Updates]) -> Updates:
        """`work`'s updates; a session that ended signs the page out, any other refusal shows as a warning."""
        try:
            return await work
        except SessionEnded as exc:
            return {ended: exc.message}
        except ApiError as exc:
            gr.Warning(exc.message)
            return {ended: gr.skip()}

    async def rename(token_: str | None, conv_id: str | None, title: str, query: str) -> Updates:
        if conv_id is None or not title.strip():
            return {ended: gr.skip()}
        session = client.with_key(token_)

        async def renamed() -> Updates:
            conv = await session.conversation(conv_id)
            await session.set_metadata(conv_id, {**conv.get("metadata", {}), "title": title.strip()[:SYSTEM_CHARS]})
            return {p.listing: await listing(session, query, conv_id)}

        return await warned(renamed())

    gr.on([p.rename.click, p.title.submit], rename, inputs=[token, p.conv, p.title, p.search], outputs=[p.listing, ended], **quiet)

    async def save_settings(token_: str | None, conv_id: str | None, system: str, temperature: float | None,
                            max_tokens: float | None) -> None:
        """Kept in the open conversation's metadata (a new chat takes them when it is created)."""
        if conv_id is None:
            return
        session = client.with_key(token_)
        try:
            metadata = (await session.conversation(conv_id)).get("metadata", {})
            kept = {k: v for k, v in metadata.items() if k not in SETTINGS_KEYS}
            await session.set_metadata(conv_id, {**kept, **settings_metadata(system, temperature, max_tokens)})
        except ApiError as exc:
            gr.Warning(exc.message)

    gr.on([p.system.blur, p.temperature.blur, p.max_tokens.blur], save_settings, inputs=[token, p.conv, *p.settings()], **quiet)

    async def delete(token_: str | None, conv_id: str | None, query: str, request: gr.Request) -> Updates:
        if conv_id is None:
            return {ended: gr.skip()}
        session = client.with_key(token_)

        async def deleted() -> Updates:
            await cancel_answer(session, conv_id)
            await session.delete_conversation(conv_id)
            return {**await open_(token_, None, request), p.listing: await listing(session, query, None)}

        return await warned(deleted())

    then_follow(p.delete.click(delete, inputs=[token, p.conv, p.search], outputs=open_outputs, cancels=answers, **quiet))

    async def save_defaults(token_: str | None, system: str, temperature: float | None, max_tokens: float | None) -> Updates:
        async def saved() -> Updates:
            await client.with_key(token_).set_chat_defaults(settings_metadata(system, temperature, max_tokens))
            gr.Info("New chats will start with these settings.")
            return {ended: gr.skip()}

        return await warned(saved())

    p.save_defaults.click(save_defaults, inputs=[token, *p.settings()], outputs=[ended], **quiet)

    async def export(token_: str | None, name: str, media_type: str, fetch: Callable[[HearthClient], Awaitable[bytes]]) -> Updates:
        async def exported() -> Updates:
            return {p.download: download(name, media_type, await fetch(client.with_key(token_)))}

        return await warned(exported())

    async def export_all(token_: str | None) -> Updates:
        """Every conversation, as the JSON file that import takes."""
        return await export(token_, "hearth-conversations.json", "application/json", lambda s: s.export_all())

    async def export_chat(token_: str | None, conv_id: str | None, title: str) -> Updates:
        if conv_id is None:
            gr.Info("This chat is empty: nothing to export yet.")
            return {ended: gr.skip()}
        return await export(token_, f"{file_name(title)}.md", "text/markdown", lambda s: s.export_markdown(conv_id))

    for exporting in (p.export_all.click(export_all, inputs=[token], outputs=[p.download, ended], **quiet),
                      p.export_chat.click(export_chat, inputs=[token, p.conv, p.title], outputs=[p.download, ended], **quiet)):
        saved = exporting.then(None, inputs=[p.download], outputs=[p.download], js=SAVE_DOWNLOAD, **quiet)
        saved.then(lambda: "", outputs=[p.download], queue=False, **quiet)

    async def import_(token_: str | None, path: str | None, query: str, chosen: str | None) -> Updates:
        if path is None:
            return {ended: gr.skip()}
        exported = await asyncio.to_thread(Path(path).read_bytes)
        Path(path).unlink(missing_ok=True)  # the ui keeps nobody's conversations on its disk
        session = client.with_key(token_)
        try:
            result = await session.import_conversations(exported)
            found = await listing(session, query, chosen)
        except SessionEnded as exc:
            return {ended: exc.message}
        except ApiError as exc:
            return {p.import_result: f"⚠️ Nothing was imported from this file: {exc.message}", p.importer: None}
        return {p.import_result: imported_line(result), p.listing: found, p.importer: None}

    p.importer.upload(import_, inputs=[token, p.importer, p.search, p.conv], outputs=[p.import_result, p.listing, p.importer, ended], **quiet)

    async def stop(token_: str | None, conv_id: str | None) -> gr.Textbox:
        await cancel_answer(client.with_key(token_), conv_id)
        return ready()

    p.textbox.stop(stop, inputs=[token, p.conv], outputs=[p.textbox], cancels=[*answers, *followers], **quiet)


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
