"""The Chat tab's parts (the sidebar, the chat, the input) and how each shows a state of the chat."""

from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.blocks import Block

from hearth.metadata import METADATA_VALUE_CHARS
from ui.attachments import FILE_TYPES, with_chips
from ui.chat_session import DEFAULT_MODEL, MAX_TOKENS_KEY, MODEL_KEY, SYSTEM_KEY, TEMPERATURE_KEY, TITLE_KEY, ChatSession, number
from ui.reply import Message
from ui.untrusted import defused

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


def busy() -> gr.Textbox:
    """The input while an answer streams: Stop instead of Send."""
    return gr.Textbox(value="", submit_btn=False, stop_btn=True, interactive=False)


def waiting() -> gr.Textbox:
    """The input until the signed-in chat is set up (a message sent earlier would race it)."""
    return gr.Textbox(value="", submit_btn=True, stop_btn=False, interactive=False)


def ready(value: str | None = None) -> gr.Textbox:
    """The input ready for a message; `value` None leaves what is typed. Gradio sends every
    argument given, `value=None` included, and a late follower (of a chat left a moment before)
    may make the input ready again after the user began typing: that must not empty it."""
    if value is None:
        return gr.Textbox(submit_btn=True, stop_btn=False, interactive=True)
    return gr.Textbox(value=value, submit_btn=True, stop_btn=False, interactive=True)


def picker(served: list[tuple[str, str]], chosen: str | None = None) -> gr.Dropdown:
    """The model picker's choices (`served`: `model_choice`s), and `chosen` if given; a chosen
    model no worker serves now stays, said to be so."""
    choices = [(DEFAULT_MODEL, ""), *served]
    if chosen and chosen not in [value for _, value in served]:
        choices.append((f"{chosen} · not served now", chosen))
    return gr.Dropdown(choices=choices) if chosen is None else gr.Dropdown(choices=choices, value=chosen)


def on_page(chat: ChatSession) -> list[Message]:
    """The chat's messages as the chatbot gets them: their text defused (ui.untrusted), never as
    written, under the chips of the files a question attached. A streaming answer sends them all
    again for each token, so those before the last (which grows) are defused once per showing."""
    last = len(chat.messages) - 1

    def shown(m: Message, text: str) -> Message:
        return {**{k: v for k, v in m.items() if k != "files"}, "content": with_chips(text, m.get("files") or [])}

    return [shown(m, defused(m["content"]) if n == last else chat.defused(m["content"]))
            if isinstance(m.get("content"), str) else m for n, m in enumerate(chat.messages)]


@dataclass(frozen=True)
class ChatPanel:
    session: gr.State  # this browser session's `ChatSession`
    saved_conv: gr.BrowserState  # the open conversation's id, kept by the browser for a reload
    sidebar: gr.Sidebar
    new: gr.Button
    search: gr.Textbox
    listing: gr.Radio
    title: gr.Textbox
    rename: gr.Button
    delete: gr.Button
    model: gr.Dropdown
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
    attach: gr.File  # the files the next message attaches (a button, or dropped on it)

    def settings(self) -> list[Block]:
        return [self.model, self.system, self.temperature, self.max_tokens]

    def outputs(self) -> list[Block]:
        return [self.saved_conv, self.sidebar, self.search, self.listing, self.title, *self.settings(),
                self.import_result, self.download, self.chatbot, self.textbox, self.attach]

    def opened(self, chat: ChatSession, metadata: dict[str, str], served: list[tuple[str, str]]) -> Updates:
        """The page showing `chat`'s conversation, with its settings (`served`: the models to choose
        from); the input waits for its follower. Files attached for the next message stay (they
        may have been chosen while it was being shown)."""
        return {self.saved_conv: chat.conv_id, self.chatbot: on_page(chat), self.listing: gr.Radio(value=chat.conv_id),
                self.title: metadata.get(TITLE_KEY, ""), self.model: picker(served, metadata.get(MODEL_KEY, "")), self.system: metadata.get(SYSTEM_KEY, ""),
                self.temperature: number(metadata, TEMPERATURE_KEY), self.max_tokens: number(metadata, MAX_TOKENS_KEY),
                self.textbox: waiting()}

    def reset(self) -> Updates:
        """Nothing of the last user stays on the page (the browser's `saved_conv` is the page's to keep or forget)."""
        cleared: Updates = {**self.opened(ChatSession(), {}, []), self.attach: None, self.listing: gr.Radio(choices=[], value=None), self.search: "",
                            self.import_result: "", self.download: "", self.sidebar: gr.Sidebar(visible=False)}
        del cleared[self.saved_conv]
        return cleared


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
            model = gr.Dropdown(label="Model", choices=[(DEFAULT_MODEL, "")], value="", elem_id="hearth-model")
            system = gr.Textbox(label="System prompt", lines=2, max_length=METADATA_VALUE_CHARS, elem_id="hearth-system")
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
            "delete": delete, "model": model, "system": system, "temperature": temperature, "max_tokens": max_tokens,
            "save_defaults": save_defaults, "export_chat": export_chat, "export_all": export_all, "importer": importer,
            "import_result": import_result, "download": download}


def chat_panel(sidebar: dict[str, Block], browser_key: str) -> ChatPanel:
    """The chat itself (added where the page is being built); the sidebar made by `chat_sidebar`."""
    chatbot = gr.Chatbot(label="Hearth", scale=1, autoscroll=True, editable="user", buttons=["copy"],
                         elem_id="hearth-chatbot", height="60vh")
    # Not editable until the signed-in chat is shown (its follower makes it ready): text typed
    # before would be cleared by that, or sent into the chat being replaced.
    with gr.Row(equal_height=True):
        textbox = gr.Textbox(placeholder="Message Hearth", show_label=False, submit_btn=True, stop_btn=False,
                             max_lines=8, autofocus=True, interactive=False, scale=4, elem_id="hearth-input")
        # Sent to the api with the next message (ChatController.uploaded), then deleted here.
        attach = gr.File(label="Attach (PDF, text, Markdown, HTML, DOCX)", file_count="multiple", file_types=FILE_TYPES,
                         height=120, scale=1, min_width=180, elem_id="hearth-attach")
    return ChatPanel(session=gr.State(ChatSession()),
                     saved_conv=gr.BrowserState(None, storage_key="hearth-conversation", secret=browser_key),
                     chatbot=chatbot, textbox=textbox, attach=attach, **sidebar)  # type: ignore[arg-type]
