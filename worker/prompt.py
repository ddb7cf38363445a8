"""Turn chat messages into prompt tokens with the GGUF's own chat template.

Two traps this module exists for:
- Some templates (Mistral Instruct) raise on a `system` role or on non-alternating turns, and
  llama-cpp-python's built-in `mistral-instruct` format silently drops system messages. We
  probe the template once and, where it needs it, fold the system prompt into the first user
  turn and merge consecutive same-role messages, so the system prompt always reaches the model.
- Rendering then tokenizing the whole prompt with special tokens parsed would turn user text
  such as `<|im_end|>` into real control tokens. Message contents, and whatever the template
  writes as JSON (`tojson`: tools, call arguments), are rendered as sentinels: only the
  template's own text is searched for control tokens. The text between two control tokens,
  template and contents together, is tokenized at once with none parsed, as llama.cpp
  tokenizes a whole prompt: for ordinary contents the tokens are exactly those of the
  rendered prompt tokenized in one go (tokenized apart, `[INST] ` + `Hello` would give `▁`,
  `Hello` where the model was trained on `▁Hello`).

A template that takes tools (`native_tools`) renders them, the assistant's calls and the tool
results itself, as its model was trained to read them; see worker.tool_calls.
"""

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from jinja2 import TemplateError, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hearth.contract import FunctionSpec, Message, ToolCall
from worker.tool_calls import DIALECTS, HERMES, Dialect, template_call, template_id, template_tool

Tokenize = Callable[[bytes, bool], list[int]]  # (text, parse_special) -> tokens

# Used when a GGUF carries no template: ChatML, what most small instruct models speak.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The caller's texts (contents, tool descriptions) are rendered as sentinels, and so is the
# JSON the template writes (`tojson`), so that only the template's own text is searched for
# control tokens. A sentinel's kind says how the template showed the text: as it is, trimmed
# (`trim`), or inside a JSON string (`tojson` of a value holding it: escaped, with or without
# ensure_ascii).
_SENTINEL = "\x1ehearth{}\x1e"
_TRIMMED = "\x1eheartht{}\x1e"
_JSON_SENTINEL = "\x1ehearthjson{}\x1e"
_SENTINEL_RE = re.compile("\x1ehearth(json|t|q|a)?(\\d+)\x1e")
_ESCAPED_SENTINEL_RE = re.compile(r"\\u001ehearth(\d+)\\u001e")  # a text's sentinel inside JSON
_JSON_PIECES = "hearth_json_pieces"  # the render's list of `tojson` texts, when they are to be kept apart


def _raise(message: str) -> None:
    raise TemplateError(message)


@pass_context
def _tojson(context: Context, value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """JSON as transformers' chat templates write it (jinja's own `tojson` escapes `<`, `>`,
    `&` and `'` for HTML, which no model was trained on); kept apart as a sentinel when the
    prompt is being tokenized, because it holds the caller's text. The sentinel stands for
    all but the last character, which stays: Mistral v0.3's template cuts a call's closing
    brace off (`out[:-1]`) to add its id."""
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    text = _ESCAPED_SENTINEL_RE.sub(lambda m: f"\x1ehearth{'a' if ensure_ascii else 'q'}{m.group(1)}\x1e", text)
    pieces = context.get(_JSON_PIECES)
    if pieces is None or not text:
        return text
    pieces.append(text[:-1])
    return _JSON_SENTINEL.format(len(pieces) - 1) + text[-1]


def _trim(value: Any, chars: str | None = None) -> str:
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


def _at(rendered: str, text: int) -> re.Match[str] | None:
    """Where the template showed the caller's text number `text`, in whatever form."""
    return re.search(f"\x1ehearth[tqa]?{text}\x1e", rendered)


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


class ChatTemplate:
    def __init__(self, source: str | None, bos_token: str, eos_token: str, tokenize: Tokenize, controls: Sequence[str]):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = _tojson
        env.filters["trim"] = _trim
        self._template = env.from_string(source or CHATML)
        self._bos, self._eos = bos_token, eos_token
        self._tokenize = tokenize
        # The control tokens' texts, parsed as such in the template's own text only. Longest
        # first, as llama.cpp matches them (one's text may start another's).
        longest = sorted(controls, key=len, reverse=True)
        self._controls = re.compile("(" + "|".join(map(re.escape, longest)) + ")") if longest else None
        self.folds_system = self._accepts([Turn("system", "s"), Turn("user", "u")]) is None
        self.merges_turns = self._accepts([Turn("user", "u"), Turn("user", "u")]) is None
        self.needs_user_first = self._accepts([Turn("assistant", "a"), Turn("user", "u")]) is None
        self.turn_markers = self._turn_markers()
        native = self._native_dialect()
        self.native_tools = native is not None
        self.dialect = native or HERMES  # how the model writes its calls (worker.tool_calls)
        call = ToolCall(id="call_0", name="f", arguments="{}")
        results = [Turn("user", "u"), Turn("assistant", "", (call,)), Turn("tool", "r", tool_call_id=call.id)]
        # Mistral v0.3's template wants an answer between a tool's result and the next question,
        # and shows the system prompt only with a question that ends the chat.
        self.needs_answer_after_results = self.native_tools and self._accepts([*results, Turn("user", "u")]) is None
        self.drops_system_after_results = self.native_tools and "hearth system" not in (self._accepts([Turn("system", "hearth system"), *results]) or "")

    def _render(self, turns: Sequence[Turn], tools: Sequence[FunctionSpec] = (), json_pieces: list[str] | None = None) -> str:
        messages: list[dict[str, Any]] = []
        for t in turns:
            message: dict[str, Any] = {"role": t.role, "content": t.content}
            if t.tool_calls:
                message["tool_calls"] = [template_call(c) for c in t.tool_calls]
            if t.tool_call_id is not None:
                message["tool_call_id"] = template_id(t.tool_call_id)
            messages.append(message)
        return self._template.render(
            messages=messages,
            tools=[template_tool(f) for f in tools] or None,
            add_generation_prompt=True,
            bos_token=self._bos,
            eos_token=self._eos,
            **({_JSON_PIECES: json_pieces} if json_pieces is not None else {}),
        )

    def _accepts(self, turns: Sequence[Turn], tools: Sequence[FunctionSpec] = ()) -> str | None:
        """The rendered text, or None if the template refuses these turns."""
        try:
            return self._render(turns, tools)
        except (TemplateError, TypeError):  # TypeError: a template adding a string to what it did not expect
            return None

    def _native_dialect(self) -> Dialect | None:
        """The dialect in which the template shows the tools, the assistant's calls and the
        tool results itself (Qwen 2.5's Hermes blocks, Llama 3.1's JSON, Mistral v0.3's
        `[TOOL_CALLS]`): then it is given them as they are, and the model writes its calls
        in that dialect. Any other template (none for tools, or a call syntax Hearth does not
        know) gets them folded into plain messages, in the generic format."""
        call = ToolCall(id="call_0", name="hearth_probe", arguments='{"a": 1}')
        tool = FunctionSpec(name="hearth_probe", description="hearth probe's description", parameters={"type": "object"}, enforced={})
        rendered = self._accepts([Turn("user", _SENTINEL.format(0)), Turn("assistant", "", (call,)),
                                  Turn("tool", _SENTINEL.format(1), tool_call_id=call.id), Turn("assistant", _SENTINEL.format(2)),
                                  Turn("user", _SENTINEL.format(3))], [tool])
        if rendered is None or tool.description not in rendered:
            return None
        texts = [_at(rendered, i) for i in range(4)]
        for dialect in DIALECTS:
            shown = [m.start() if m else -1 for m in texts]
            shown.insert(1, rendered.find(dialect.call_start(call.name, call.arguments)))
            if -1 not in shown and shown == sorted(shown):
                return dialect
        return None

    def _turn_markers(self) -> list[str]:
        """The text that opens a new turn (`[INST]`, `<|im_start|>user`): stop strings, so a
        model that writes one as plain text ends its answer there instead of rambling on into
        a made-up next turn. (As special tokens they are never printed at all.)"""
        rendered = self._render([Turn("user", _SENTINEL.format(0)), Turn("assistant", _SENTINEL.format(1)), Turn("user", _SENTINEL.format(2))])
        answer, question = _at(rendered, 1), _at(rendered, 2)
        between = rendered[answer.end(): question.start()] if answer and question else ""
        if self._eos:  # the end of the answer itself, not the start of a new turn
            between = between.replace(self._eos, " ")
        # A marker has punctuation: a plain word such as "user" would cut ordinary answers.
        return [piece for piece in between.split() if len(piece) >= 3 and not piece.isalnum()]

    def normalize(self, messages: Sequence[Message]) -> list[Turn]:
        """Messages reshaped into what this template accepts, losing no content."""
        turns = [Turn("system" if m.role == "developer" else m.role, m.content, tuple(m.tool_calls), m.tool_call_id) for m in messages]
        if not self.native_tools:  # worker.tool_calls folded calls and results into contents
            turns = [Turn("user" if t.role == "tool" else t.role, t.content) for t in turns]
        if self.folds_system or (self.drops_system_after_results and turns and turns[-1].role == "tool"):
            system = "\n\n".join(t.content for t in turns if t.role == "system")
            turns = [t for t in turns if t.role != "system"]
            if system:
                first_user = next((i for i, t in enumerate(turns) if t.role == "user"), None)
                if first_user is None:
                    turns.insert(0, Turn("user", system))
                else:
                    turns[first_user] = Turn("user", f"{system}\n\n{turns[first_user].content}")
        if self.needs_user_first and turns and turns[0].role == "assistant":
            turns.insert(0, Turn("user", ""))
        if self.native_tools and not self.dialect.parallel:
            turns = _one_call_a_turn(turns)
        if self.needs_answer_after_results:
            turns = [t for i, t in enumerate(turns)
                     for t in ([Turn("assistant", ""), t] if t.role == "user" and i and turns[i - 1].role == "tool" else [t])]
        if self.merges_turns:
            # Joined once per run of same-role turns: concatenating one by one would copy
            # the growing text again for every message (quadratic in a run's length).
            # A turn with calls or answering one is never merged: runs are of equal turns but content.
            turns = [Turn(key[0], "\n\n".join(t.content for t in run), key[1], key[2])
                     for key, run in groupby(turns, key=lambda t: (t.role, t.tool_calls, t.tool_call_id))]
        return turns

    def text(self, messages: Sequence[Message], tools: Sequence[FunctionSpec] = ()) -> str:
        """The rendered prompt, as the model sees it (for tests and debugging)."""
        return self._render(self.normalize(messages), tools)

    def tokens(self, messages: Sequence[Message], tools: Sequence[FunctionSpec] = ()) -> list[int]:
        """Prompt tokens: template text with special tokens parsed, contents as plain text."""
        return self.counted(messages, self._tokenize, tools)[0]

    def counted(self, messages: Sequence[Message], tokenize: Tokenize, tools: Sequence[FunctionSpec] = ()) -> tuple[list[int], list[int]]:
        """The prompt tokens (by `tokenize`: the model's tokenizer or a memo of it), and
        about how many of them each message adds: its text and the template text before it
        (a piece of text that spans turns is shared by characters; shares only guide
        trimming, which then counts exactly). `tools`: for a template that takes them
        (`native_tools`)."""
        turns = self.normalize(messages)
        # The caller's texts: the contents, then the tools' descriptions. The empty content of
        # an answer of calls stays empty: templates test it (Qwen 2.5 then writes no line for
        # it). Others keep their sentinel, so the overheads counted with empty contents
        # (`Prompter.overheads`) include whatever a template writes around a content.
        texts = [t.content for t in turns] + [f.description for f in tools]
        json_pieces: list[str] = []
        rendered = self._render(
            [Turn(t.role, _SENTINEL.format(i) if t.content or not t.tool_calls else "", t.tool_calls, t.tool_call_id) for i, t in enumerate(turns)],
            [f.model_copy(update={"description": _SENTINEL.format(len(turns) + i)}) if f.description else f for i, f in enumerate(tools)],
            json_pieces)
        tokens: list[int] = []
        shares = [0] * (len(turns) + 1)  # the last: the template after the last turn
        text: list[tuple[str, int]] = []  # the text since the last control token, with the turn each piece counts for
        for piece, special, turn in self._pieces(rendered, texts, len(turns), json_pieces):
            if not special:
                text.append((piece, turn))
                continue
            tokens += self._tokenize_text(text, tokenize, shares)
            text = []
            # "replace": a lone surrogate (refused by the api, but a job may come from
            # elsewhere) must not fail the job.
            control = tokenize(piece.encode(errors="replace"), True)
            tokens += control
            shares[turn] += len(control)
        tokens += self._tokenize_text(text, tokenize, shares)
        if len(turns) != len(messages):
            return tokens, [len(tokens) // max(len(messages), 1)] * len(messages)
        return tokens, shares[: len(messages)]

    def _pieces(self, rendered: str, texts: Sequence[str], n_turns: int, json_pieces: Sequence[str]) -> list[tuple[str, bool, int]]:
        """The prompt's text in order, as (text, whether it is a control token, the turn it
        counts for): the template's text split at its control tokens, the caller's texts and
        the JSON in place of their sentinels. Template text, JSON and descriptions count for
        the turn whose content follows."""
        pieces: list[tuple[str, bool, int]] = []

        def caller(text: str) -> None:
            """Text with sentinels of the caller's texts (JSON), none of it a control token."""
            at = 0
            for match in [*_SENTINEL_RE.finditer(text), None]:
                pieces.append((text[at: match.start() if match else len(text)], False, -1))
                if match:
                    i = int(match.group(2))
                    pieces.append((_shown(match.group(1), texts[i]), False, i if i < n_turns else -1))
                    at = match.end()

        at = 0
        for match in [*_SENTINEL_RE.finditer(rendered), None]:
            template_text = rendered[at: match.start() if match else len(rendered)]
            for i, part in enumerate(self._controls.split(template_text) if self._controls else [template_text]):
                pieces.append((part, i % 2 == 1, -1))  # split() puts the matches at odd places
            if match and match.group(1) == "json":
                caller(json_pieces[int(match.group(2))])
            elif match:
                caller(match.group(0))
            at = match.end() if match else len(rendered)
        owner = n_turns
        for i in reversed(range(len(pieces))):
            if pieces[i][2] >= 0:
                owner = pieces[i][2]
            else:
                pieces[i] = (pieces[i][0], pieces[i][1], owner)
        return [piece for piece in pieces if piece[0]]

    @staticmethod
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


def _one_call_a_turn(turns: Sequence[Turn]) -> list[Turn]:
    """For a template that takes one call per answer (Llama 3.1's): an answer of several calls
    as one answer per call, each followed by its result."""
    out: list[Turn] = []
    i = 0
    while i < len(turns):
        t = turns[i]
        i += 1
        if len(t.tool_calls) < 2:
            out.append(t)
            continue
        results: list[Turn] = []
        while i < len(turns) and turns[i].role == "tool":
            results.append(turns[i])
            i += 1
        for n, call in enumerate(t.tool_calls):
            out.append(Turn(t.role, t.content if n == 0 else "", (call,)))
            out += [r for r in results if r.tool_call_id == call.id]
        out += [r for r in results if r.tool_call_id not in {c.id for c in t.tool_calls}]
    return out
