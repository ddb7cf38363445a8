"""One browser session's chat, and what a conversation's stored record means to the page."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hearth.documents import DocumentRef
from hearth.metadata import METADATA_VALUE_CHARS
from ui.attachments import parts_read, stored_files
from ui.client import parse_citations
from ui.reply import Message, note
from ui.untrusted import defused

NEW_CHAT = "New chat"
DEFAULT_MODEL = "The server's default"
STOPPED = "This answer was stopped before it was finished."
TITLE_KEY, MODEL_KEY, SYSTEM_KEY, TEMPERATURE_KEY, MAX_TOKENS_KEY = "title", "model", "system", "temperature", "max_tokens"
SETTINGS_KEYS = (MODEL_KEY, SYSTEM_KEY, TEMPERATURE_KEY, MAX_TOKENS_KEY)  # a conversation's chat settings, in its metadata


@dataclass
class ChatSession:
    """What one browser session's chat shows. Gradio keeps one per session (a `gr.State`) and
    hands every event of that session the same object: handlers change it in place and never
    replace it, so a reply streaming in one event sees what another event opened meanwhile."""

    conv_id: str | None = None  # the open conversation; None for a new chat not sent yet
    ticket: str = ""  # this showing of it: a follower of an earlier showing steps aside
    messages: list[Message] = field(default_factory=list)  # the chat as written (the page shows it defused); a stored one has its `id`
    asked: str = ""  # the message being sent
    files: list[DocumentRef] = field(default_factory=list)  # the documents it attaches that the api has (regenerate, edit)
    uploads: list[str] = field(default_factory=list)  # the files it attaches, on the ui's disk until sent to the api
    replacing: str | None = None  # the stored question it replaces, with all after it (regenerate, edit)
    shown_as: dict[str, str] = field(default_factory=dict, repr=False)  # messages' text as the page shows it, this showing
    unfollowed: str | None = None  # the showing whose page went out and whose follower has not started

    def showing_out(self) -> None:
        """The current showing's page update is going out: a follower may take it now (not before:
        a follower that made the input ready sooner would have what is typed emptied by the update)."""
        self.unfollowed = self.ticket

    def to_follow(self) -> str | None:
        """The ticket of the showing to follow, once (None: nothing shown since, or it was left)."""
        ticket, self.unfollowed = self.unfollowed, None
        return ticket if ticket is not None and self.current(ticket) else None

    def show(self, conv_id: str | None, messages: list[Message]) -> str:
        """Now showing `conv_id`; returns this showing's ticket."""
        self.conv_id, self.messages, self.ticket, self.shown_as = conv_id, messages, uuid.uuid4().hex, {}
        return self.ticket

    def defused(self, text: str) -> str:
        """`text` as the page shows it (ui.untrusted), made once for this showing."""
        if text not in self.shown_as:
            self.shown_as[text] = defused(text)
        return self.shown_as[text]

    def shows(self, conv_id: str | None) -> bool:
        return self.conv_id == conv_id

    def current(self, ticket: str) -> bool:
        return self.ticket == ticket

    def forget(self) -> None:
        """Signed out: nothing of the last user stays, and whatever streamed for them steps aside."""
        self.show(None, [])
        self.asked, self.replacing, self.files, self.uploads = "", None, [], []


def title_of(conv: dict[str, Any]) -> str:
    return str(conv.get("metadata", {}).get(TITLE_KEY) or NEW_CHAT)


def shown_items(items: list[dict[str, Any]]) -> list[Message]:
    """Stored messages as the chat shows them, with their ids and a question's `files` (the page
    draws them: `on_page`); an answer read from parts of documents says which, one cut short says
    so. Function calls and their results (made through the api) show as notes, which are never sent back."""
    shown: list[Message] = []
    called: dict[str, str] = {}  # call id -> function name (shown defused: an imported one is unchecked)
    for item in items:
        if item.get("type") == "function_call":
            called[str(item.get("call_id"))] = str(item.get("name"))
            shown.append(note(f"🔧 Called {item.get('name')}", str(item.get("arguments", ""))))
            continue
        if item.get("type") == "function_call_output":
            shown.append(note(f"🔧 {called.get(str(item.get('call_id')), 'The function')} returned", str(item.get("output", ""))))
            continue
        if item.get("type") != "message" or item.get("role") not in ("user", "assistant"):
            continue
        texts = [p for p in item.get("content", []) if isinstance(p.get("text"), str)]
        shown.append({"role": item["role"], "content": "\n".join(p["text"] for p in texts), "id": item.get("id"),
                      **({"files": stored_files(item)} if item["role"] == "user" else {})})
        if item["role"] == "assistant":
            read = parts_read([c for p in texts for c in parse_citations(p.get("annotations"))])
            shown.extend([note(read)] if read else [])
            shown.extend([note(f"ℹ️ {STOPPED}")] if item.get("status") == "incomplete" else [])
    return shown


def settings_metadata(model: str | None, system: str | None, temperature: float | None, max_tokens: float | None) -> dict[str, str]:
    """The chat's settings as metadata values (strings); unset ones are left out."""
    meta = {MODEL_KEY: (model or "")[:METADATA_VALUE_CHARS], SYSTEM_KEY: (system or "").strip()[:METADATA_VALUE_CHARS],
            TEMPERATURE_KEY: "" if temperature is None else f"{temperature:g}", MAX_TOKENS_KEY: "" if not max_tokens else str(int(max_tokens))}
    return {k: v for k, v in meta.items() if v}


def turn_params(model: str | None, temperature: float | None, max_tokens: float | None) -> dict[str, Any]:
    params: dict[str, Any] = {"model": model} if model else {}
    if temperature is not None:
        params["temperature"] = float(temperature)
    if max_tokens:
        params["max_tokens"] = int(max_tokens)
    return params


def turn_messages(system: str | None, asked: str, files: Sequence[DocumentRef] = ()) -> list[dict[str, Any]]:
    """A turn's request: its instructions and question, with the documents it attaches (file
    parts naming them); the api reads the history, earlier documents included, from the conversation."""
    prompt = [{"role": "system", "content": system.strip()}] if system and system.strip() else []
    parts = [{"type": "file", "file": {"file_id": f.document_id}} for f in files]
    return [*prompt, {"role": "user", "content": [*parts, {"type": "text", "text": asked}] if parts else asked}]


def model_choice(model: dict[str, Any]) -> tuple[str, str]:
    """A served model as the picker shows it: whether it answers at once, or loads first (and for how long)."""
    if model.get("loaded"):
        return f"{model['id']} · loaded", str(model["id"])
    load_s = model.get("load_s")
    wait = "" if load_s is None else f" (about {max(1, round(load_s))} s)"
    return f"{model['id']} · loads first{wait}", str(model["id"])


def number(metadata: dict[str, str], key: str) -> float | None:
    try:
        return float(metadata[key])
    except (KeyError, ValueError):
        return None
