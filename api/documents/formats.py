"""A document's text, page by page (or section by section, under their headings), from the
formats Hearth reads: PDF (pypdf), plain text, Markdown, HTML (the standard library's parser;
scripts and styles dropped) and DOCX (its XML, read with the standard library).

Runs only inside the bounded reader process (api.documents.reader): a hostile document may
take all the memory and time it is given there, never the api's. Bounds on pages and characters
are checked here, as the text is read."""

import io
import re
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from xml.etree import ElementTree

from hearth.documents import DocumentPage

ACCEPTED = "PDF, plain text, Markdown, HTML and DOCX"
_EXTENSIONS = {".pdf": "pdf", ".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
               ".html": "html", ".htm": "html", ".docx": "docx"}
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


class Unreadable(Exception):
    """The document cannot be read, or is past a bound: the message says which, for a 400."""


def kind_of(filename: str, data: bytes) -> str:
    """The format, from the file's first bytes where they tell, else its name's extension."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04") and filename.lower().endswith(".docx"):
        return "docx"
    extension = filename[filename.rfind("."):].lower() if "." in filename else ""
    kind = _EXTENSIONS.get(extension)
    if kind in ("pdf", "docx"):  # named so, but not so inside
        raise Unreadable(f"{filename!r} is not a valid {kind.upper()} file.")
    if kind is None and extension == "" and b"\0" not in data[:4096]:
        kind = "html" if data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")) else "text"
    if kind is None:
        raise Unreadable(f"Hearth cannot read {filename!r}: the types it accepts are {ACCEPTED} (.pdf, .txt, .md, .html, .docx).")
    return kind


class _Bounds:
    def __init__(self, max_pages: int, max_chars: int):
        self.max_pages, self.max_chars, self.chars = max_pages, max_chars, 0

    def pages(self, count: int) -> None:
        if count > self.max_pages:
            raise Unreadable(f"The document has {count} pages; Hearth reads at most {self.max_pages}.")

    def text(self, text: str) -> str:
        self.chars += len(text)
        if self.chars > self.max_chars:
            raise Unreadable(f"The document has more than {self.max_chars} characters of text, the most Hearth reads.")
        return text


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Unreadable("The text file is not UTF-8.") from None


def _pdf(data: bytes, bounds: _Bounds) -> list[DocumentPage]:
    from pypdf import PdfReader  # imported in the reader process only
    from pypdf.errors import LimitReachedError, PdfReadError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Unreadable("The PDF is encrypted: Hearth cannot read its text.")
        bounds.pages(len(reader.pages))
        pages = [DocumentPage(number=n, text=bounds.text((page.extract_text() or "").strip())) for n, page in enumerate(reader.pages, 1)]
    except LimitReachedError:
        raise Unreadable("The PDF's compressed content expands past the most Hearth unpacks (a decompression bomb?).") from None
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise Unreadable(f"The PDF could not be read ({type(exc).__name__}).") from None
    if not any(p.text.strip() for p in pages):
        raise Unreadable("The PDF has no text layer (a scan or images only): Hearth reads text, not images.")
    return pages


def _sections(sections: Iterator[tuple[str | None, str]], bounds: _Bounds) -> list[DocumentPage]:
    """Sections under their headings as pages numbered from 1; empty ones dropped."""
    pages: list[DocumentPage] = []
    for heading, text in sections:
        if text.strip() or heading:
            pages.append(DocumentPage(number=len(pages) + 1, text=bounds.text(text.strip()), heading=heading))
            bounds.pages(len(pages))
    if not any(p.text or p.heading for p in pages):
        raise Unreadable("The document has no text.")
    return pages


def _markdown(text: str) -> Iterator[tuple[str | None, str]]:
    heading: str | None = None
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            yield heading, "\n".join(lines)
            heading, lines = match.group(1), []
        else:
            lines.append(line)
    yield heading, "\n".join(lines)


class _HtmlText(HTMLParser):
    """Text by section: each heading (h1 to h6) starts one; scripts, styles and the like dropped."""

    HIDDEN = frozenset({"script", "style", "template", "noscript", "head"})
    HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "section", "article", "table", "ul", "ol", "pre", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[tuple[str | None, list[str]]] = [(None, [])]
        self._hidden = 0
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag in self.HEADINGS:
            self._heading = []
        elif tag in self.BLOCKS:
            self.sections[-1][1].append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self.HEADINGS and self._heading is not None:
            self.sections.append((" ".join("".join(self._heading).split()), []))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        (self._heading if self._heading is not None else self.sections[-1][1]).append(data)


def _html(text: str) -> Iterator[tuple[str | None, str]]:
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    for heading, parts in parser.sections:
        yield heading, re.sub(r"\n\s*\n+", "\n\n", "".join(parts))


def _docx(data: bytes, bounds: _Bounds) -> Iterator[tuple[str | None, str]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo("word/document.xml")
            if info.file_size > bounds.max_chars * 64:  # markup around the text, generously
                raise Unreadable("The DOCX's text is larger than Hearth reads.")
            root = ElementTree.fromstring(archive.read(info))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError):
        raise Unreadable("The DOCX file could not be read.") from None
    heading: str | None = None
    lines: list[str] = []
    for paragraph in root.iter(f"{_W}p"):
        text = "".join(node.text or "" for node in paragraph.iter(f"{_W}t"))
        style = paragraph.find(f"{_W}pPr/{_W}pStyle")
        if style is not None and (style.get(f"{_W}val") or "").lower().startswith(("heading", "title")):
            yield heading, "\n".join(lines)
            heading, lines = text.strip(), []
        else:
            lines.append(text)
    yield heading, "\n".join(lines)


def extract(filename: str, data: bytes, max_pages: int, max_chars: int) -> list[DocumentPage]:
    bounds = _Bounds(max_pages, max_chars)
    kind = kind_of(filename, data)
    if kind == "pdf":
        return _pdf(data, bounds)
    if kind == "docx":
        return _sections(_docx(data, bounds), bounds)
    text = _decode(data)
    if kind == "markdown":
        return _sections(_markdown(text), bounds)
    if kind == "html":
        return _sections(_html(text), bounds)
    return _sections(iter([(None, text)]), bounds)
