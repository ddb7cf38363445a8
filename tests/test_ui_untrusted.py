"""ui.untrusted: message Markdown defused, read back by a CommonMark renderer with raw HTML on (no browser)."""

from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from tests.hostile import VECTORS, hostile_text, leak_url
from ui.chat_session import shown_items
from ui.shared import transcript
from ui.untrusted import defused

BASE = "http://127.0.0.1:18999"
RENDERER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


class Elements(HTMLParser):
    """The elements an HTML text makes, with their attributes."""

    def __init__(self, html: str):
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def rendered(markdown: str) -> str:
    return RENDERER.render(markdown)


def fetching(html: str) -> list[str]:
    """Elements beyond text formatting, links and code, and any attribute but a link's naming an address."""
    kept = {"p", "a", "code", "pre", "em", "strong", "ul", "ol", "li", "blockquote", "table", "thead", "tbody", "tr", "th", "td",
            "br", "hr", "h1", "h2", "h3", "s"}
    return [f"{tag} {attrs}" for tag, attrs in Elements(html).found
            if tag not in kept or any(name != "href" and "leak" in (value or "") for name, value in attrs.items())]


@pytest.mark.parametrize("name", list(VECTORS))
def test_no_vector_renders_as_an_element(name: str) -> None:
    html = rendered(defused(VECTORS[name].format(leak=leak_url(BASE, name))))
    assert not fetching(html), html


def test_the_whole_hostile_message_renders_nothing_that_fetches() -> None:
    html = rendered(defused(hostile_text(BASE)))
    assert not fetching(html), html
    assert [attrs["href"] for tag, attrs in Elements(html).found if tag == "a" and "leak" in (attrs["href"] or "")] == [
        leak_url(BASE, name) for name in ("MD", "MD-TITLED", "MD-REF", "MD-NESTED", "MD-TABLE")]  # images, as links


def test_the_unfused_message_would_fetch() -> None:
    """The check above can fail: the same renderer on the text as written makes the elements."""
    made = {found.split()[0] for found in fetching(rendered(hostile_text(BASE)))}
    assert {"img", "iframe", "video", "audio", "source", "link", "style", "object", "embed", "meta", "script"} <= made


def test_an_image_becomes_a_link_showing_its_address() -> None:
    html = rendered(defused("Look: ![a cat](http://example.invalid/cat.png?x=1_2)"))
    assert '<a href="http://example.invalid/cat.png?x=1_2">Image &quot;a cat&quot;: http://example.invalid/cat.png?x=1_2</a>' in html
    assert "<img" not in html


def test_raw_html_shows_as_its_text() -> None:
    assert rendered(defused("a <b>bold</b> <img src=x> claim")) == "<p>a &lt;b&gt;bold&lt;/b&gt; &lt;img src=x&gt; claim</p>\n"


@pytest.mark.parametrize("text", [
    "Plain text, with a < b and 3 > 2, *emphasis*, `code`, [a link](https://example.org) and <https://example.org>.",
    "```html\n<div><img src=\"pic.png\"></div>\n```",
    "    <indented code=\"kept\">",
    "| a | b |\n| --- | --- |\n| 1 | 2 |",
    "\\<not a tag> and \\![not an image](x)",
])
def test_what_fetches_nothing_is_left_as_written(text: str) -> None:
    assert defused(text) == text


def test_a_code_span_shows_tags_as_written() -> None:
    html = rendered(defused("Use the `<div>` element, or ``![alt](src)``."))
    assert html.replace("\u2060", "") == "<p>Use the <code>&lt;div&gt;</code> element, or <code>![alt](src)</code>.</p>\n"


def test_a_note_title_is_defused() -> None:
    """A function call's name shows in a note's title, which Gradio renders as Markdown; an
    imported conversation's stored call may carry any name (regression: it went in as written)."""
    leak = leak_url(BASE, "TITLE")
    [called] = shown_items([{"type": "function_call", "call_id": "c1", "name": f"![x]({leak})", "arguments": "{}"}])
    html = rendered(called["metadata"]["title"])
    assert not fetching(html), html
    assert leak in html  # shown as a link's address


def test_a_shared_conversation_is_defused() -> None:
    """Another person's messages on the Shared tab (regression: they went to the Chatbot as written)."""
    shared = {"items": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": hostile_text(BASE)}]}]}
    [message] = transcript(shared)
    html = rendered(message["content"])
    assert not fetching(html), html


def test_a_shared_question_shows_its_files_as_literal_chips_above_its_defused_text() -> None:
    name = f"<img src='{leak_url(BASE, 'FILENAME')}'> ![x]({leak_url(BASE, 'FILENAME-MD')}).pdf"
    shared = {"items": [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": hostile_text(BASE)}, {"type": "input_file", "file_id": "file-1", "filename": name}]}]}
    [message] = transcript(shared)
    assert message["content"].startswith("📎 **")
    html = rendered(message["content"])
    assert not fetching(html), html
    assert "&lt;img src=" in html  # the name shown as written, never as markup
