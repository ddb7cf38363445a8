"""The caller's texts kept apart from a chat template's own text, and the rendered prompt
tokenized around them (worker.prompt.ChatTemplate renders, this tokenizes).

Rendering then tokenizing the whole prompt with special tokens parsed would turn user text
such as `<|im_end|>` into real control tokens. The caller's texts (contents, tool
descriptions), and whatever the template writes as JSON (`tojson`: tools, call arguments),
are rendered as sentinels: only the template's own text is searched for control tokens. The
text between two control tokens, template and contents together, is tokenized at once with
none parsed, as llama.cpp tokenizes a whole prompt: for ordinary contents the tokens are
exactly those of the rendered prompt tokenized in one go (tokenized apart, `[INST] ` +
`Hello` would give `▁`, `Hello` where the model was trained on `▁Hello`; SentencePiece, which
puts a space before each text it is given, an extra `▁` too).
"""

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context

Tokenize = Callable[[bytes, bool], list[int]]  # (text, parse_special) -> tokens

# The caller's texts (contents, tool descriptions) are rendered as sentinels, and so is the
# JSON the template writes (`tojson`), so that only the template's own text is searched for
# control tokens. A sentinel's kind says how the template showed the text: as it is, trimmed
# (`trim`), or inside a JSON string (`tojson` of a value holding it: escaped, with or without
# ensure_ascii).
SENTINEL = "\x1ehearth{}\x1e"
_TRIMMED = "\x1eheartht{}\x1e"
_JSON_SENTINEL = "\x1ehearthjson{}\x1e"
_SENTINEL_RE = re.compile("\x1ehearth(json|t|q|a)?(\\d+)\x1e")
_ESCAPED_SENTINEL_RE = re.compile(r"\\u001ehearth(\d+)\\u001e")  # a text's sentinel inside JSON
JSON_PIECES = "hearth_json_pieces"  # the render's list of `tojson` texts, when they are to be kept apart


@pass_context
def tojson(context: Context, value: Any, ensure_ascii: bool = False, indent: int | None = None,
           separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """JSON as transformers' chat templates write it (jinja's own `tojson` escapes `<`, `>`,
    `&` and `'` for HTML, which no model was trained on); kept apart as a sentinel when the
    prompt is being tokenized, because it holds the caller's text. The sentinel stands for
    all but the last character, which stays: Mistral v0.3's template cuts a call's closing
    brace off (`out[:-1]`) to add its id."""
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    text = _ESCAPED_SENTINEL_RE.sub(lambda m: f"\x1ehearth{'a' if ensure_ascii else 'q'}{m.group(1)}\x1e", text)
    pieces = context.get(JSON_PIECES)
    if pieces is None or not text:
        return text
    pieces.append(text[:-1])
    return _JSON_SENTINEL.format(len(pieces) - 1) + text[-1]


def trim(value: Any, chars: str | None = None) -> str:
    """Jinja's `trim`, which a text's sentinel remembers (Llama 3.1 trims every content)."""
    text = str(value)
    match = _SENTINEL_RE.fullmatch(text)
    if match and match.group(1) is None and chars is None:
        return _TRIMMED.format(match.group(2))
    return text.strip(chars)


def _shown(kind: str | None, text: str) -> str:
    """A caller's text as the template showed it (the kind of its sentinel)."""
    if kind == "t":
        return text.strip()
    if kind in ("q", "a"):
        return json.dumps(text, ensure_ascii=kind == "a")[1:-1]
    return text


def at(rendered: str, text: int) -> re.Match[str] | None:
    """Where the template showed the caller's text number `text`, in whatever form."""
    return re.search(f"\x1ehearth[tqa]?{text}\x1e", rendered)


def control_pattern(controls: Sequence[str]) -> re.Pattern[str] | None:
    """The control tokens' texts as one pattern: longest first, as llama.cpp matches them
    (one's text may start another's)."""
    longest = sorted(controls, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, longest)) + ")") if longest else None


def tokenized(rendered: str, controls: re.Pattern[str] | None, texts: Sequence[str], n_turns: int, json_pieces: Sequence[str],
              tokenize: Tokenize) -> tuple[list[int], list[int]]:
    """The tokens of `rendered` (the template's text with sentinels of the caller's `texts`,
    the first `n_turns` of them the turns' contents, and of the `json_pieces`), and about how
    many of them each turn adds, and then the text after the last turn."""
    tokens: list[int] = []
    shares = [0] * (n_turns + 1)  # the last: the template after the last turn
    text: list[tuple[str, int]] = []  # the text since the last control token, with the turn each piece counts for
    for piece, special, turn in _pieces(rendered, controls, texts, n_turns, json_pieces):
        if not special:
            text.append((piece, turn))
            continue
        tokens += _tokenize_text(text, tokenize, shares)
        text = []
        # "replace": a lone surrogate (refused by the api, but a job may come from
        # elsewhere) must not fail the job.
        control = tokenize(piece.encode(errors="replace"), True)
        tokens += control
        shares[turn] += len(control)
    tokens += _tokenize_text(text, tokenize, shares)
    return tokens, shares


def _pieces(rendered: str, controls: re.Pattern[str] | None, texts: Sequence[str], n_turns: int, json_pieces: Sequence[str]) -> list[tuple[str, bool, int]]:
    """The prompt's text in order, as (text, whether it is a control token, the turn it
    counts for): the template's text split at its control tokens, the caller's texts and
    the JSON in place of their sentinels. Template text, JSON and descriptions count for
    the turn whose content follows."""
    pieces: list[tuple[str, bool, int]] = []

    def caller(text: str) -> None:
        """Text with sentinels of the caller's texts (JSON), none of it a control token."""
        start = 0
        for match in [*_SENTINEL_RE.finditer(text), None]:
            pieces.append((text[start: match.start() if match else len(text)], False, -1))
            if match:
                i = int(match.group(2))
                pieces.append((_shown(match.group(1), texts[i]), False, i if i < n_turns else -1))
                start = match.end()

    start = 0
    for match in [*_SENTINEL_RE.finditer(rendered), None]:
        template_text = rendered[start: match.start() if match else len(rendered)]
        for i, part in enumerate(controls.split(template_text) if controls else [template_text]):
            pieces.append((part, i % 2 == 1, -1))  # split() puts the matches at odd places
        if match and match.group(1) == "json":
            caller(json_pieces[int(match.group(2))])
        elif match:
            caller(match.group(0))
        start = match.end() if match else len(rendered)
    owner = n_turns
    for i in reversed(range(len(pieces))):
        if pieces[i][2] >= 0:
            owner = pieces[i][2]
        else:
            pieces[i] = (pieces[i][0], pieces[i][1], owner)
    return [piece for piece in pieces if piece[0]]


def _tokenize_text(text: Sequence[tuple[str, int]], tokenize: Tokenize, shares: list[int]) -> list[int]:
    """Text between control tokens, tokenized at once, as llama.cpp tokenizes the text
    between special tokens of a whole prompt (no seam at `[INST] ` + content splits a
    `▁Hello` the model knows), but with none parsed: a content spelling `</s>` stays text.
    Its tokens are added to `shares` by each piece's characters."""
    joined = "".join(piece for piece, _ in text)
    if not joined:
        return []
    tokens = tokenize(joined.encode(errors="replace"), False)
    done = chars = 0
    for piece, turn in text:
        chars += len(piece)
        upto = len(tokens) * chars // len(joined)
        shares[turn] += upto - done
        done = upto
    return tokens
