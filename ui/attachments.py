"""Documents attached to a chat message, as the chat page shows them: the files' names as chips
above the question, and a note under an answer that read only parts of them ("Answered from
pages 12-14 of lease.pdf", written with an en dash). Filenames are the user's, but a stored or
imported conversation may carry any: they are shown as literal text, never as markup or a link.

The api reads the documents (`/v1/files`, purpose `user_data`); the page keeps only their ids
and names: `files` on a user message, `citations` (hearth.documents.Citation) on an answer."""

from collections.abc import Iterable
from itertools import groupby
from typing import Any

from hearth.documents import Citation, DocumentRef
from ui.account import plain

# What the api reads (api.documents.formats); the picker offers these.
FILE_TYPES = [".pdf", ".txt", ".text", ".md", ".markdown", ".html", ".htm", ".docx"]
CHIP = "📎"
EN_DASH = "\u2013"  # between the first and last page of a run


def literal(name: str) -> str:
    """A filename as literal Markdown on one line: no character of it is markup."""
    return plain(" ".join(name.split()))


def chips(files: Iterable[DocumentRef]) -> str:
    """The chips line above a question that attached `files` (empty without any)."""
    return "  ".join(f"{CHIP} **{literal(f.filename)}**" for f in files)


def with_chips(text: str, files: list[DocumentRef]) -> str:
    """A question's Markdown as shown: its chips, then its text (already defused)."""
    return f"{chips(files)}\n\n{text}" if files else text


def without_chips(shown: str, files: list[DocumentRef]) -> str:
    """An edited question's text (Gradio's edit starts from what was shown, chips included)."""
    return shown.removeprefix(chips(files)).lstrip("\n") if files else shown


def stored_files(item: dict[str, Any]) -> list[DocumentRef]:
    """The files a stored user message attached (its `input_file` parts)."""
    return [DocumentRef(document_id=str(p.get("file_id", "")), filename=str(p.get("filename", "")))
            for p in item.get("content", []) if isinstance(p, dict) and p.get("type") == "input_file"]


def _runs(pages: list[int]) -> str:
    """[3, 7, 8, 9, 137] as "pages 3, 7-9 and 137" (with an en dash)."""
    numbers = sorted(set(pages))
    runs = [[n for _, n in run] for _, run in groupby(enumerate(numbers), lambda x: x[1] - x[0])]
    parts = [str(run[0]) if len(run) == 1 else f"{run[0]}{EN_DASH}{run[-1]}" for run in runs]
    said = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f"page{'s' * (len(numbers) > 1)} {said}"


def parts_read(citations: list[Citation]) -> str | None:
    """The note under an answer given from parts of documents, from its citations (those with a
    chunk); None when every document was read whole."""
    partial: dict[str, tuple[str, list[int]]] = {}
    for c in citations:
        if c.chunk is not None:
            partial.setdefault(c.document_id, (c.filename, []))[1].extend([] if c.page is None else [c.page])
    if not partial:
        return None
    said = [f"{_runs(pages)} of {literal(name)}" if pages else f"parts of {literal(name)}" for name, pages in partial.values()]
    return f"ℹ️ Answered from {', '.join(said[:-1]) + ' and ' if len(said) > 1 else ''}{said[-1]} (only those parts were read)"
