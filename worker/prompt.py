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
from worker.tool_calls import call_text, template_call, template_tool

Tokenize = Callable[[bytes, bool], list[int]]  # (text, parse_special) -> tokens

# Used when a GGUF carries no template: ChatML, what most small instruct models speak.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SENTINEL = "\x1ehearth{}\x1e"  # a message's content
_JSON_SENTINEL = "\x1ehearthjson{}\x1e"  # a piece of JSON the template wrote (`tojson`)
_SENTINEL_RE = re.compile("\x1ehearth(json)?(\\d+)\x1e")
_JSON_PIECES = "hearth_json_pieces"  # the render's list of `tojson` texts, when they are to be kept apart


def _raise(message: str) -> None:
    raise TemplateError(message)


@pass_context
def _tojson(context: Context, value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """JSON as transformers' chat templates write it (jinja's own `tojson` escapes `<`, `>`,
    `&` and `'` for HTML, which no model was trained on); kept apart as a sentinel when the
    prompt is being tokenized, because it holds the caller's text."""
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    pieces = context.get(_JSON_PIECES)
    if pieces is None:
        return text
    pieces.append(text)
    return _JSON_SENTINEL.format(len(pieces) - 1)


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
        self.native_tools = self._renders_tools()

    def _render(self, turns: Sequence[Turn], tools: Sequence[FunctionSpec] = (), json_pieces: list[str] | None = None) -> str:
        messages: list[dict[str, Any]] = []
        for t in turns:
            message: dict[str, Any] = {"role": t.role, "content": t.content}
            if t.tool_calls:
                message["tool_calls"] = [template_call(c) for c in t.tool_calls]
            if t.tool_call_id is not None:
                message["tool_call_id"] = t.tool_call_id
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

    def _renders_tools(self) -> bool:
        """Whether the template shows the tools, the assistant's calls and the tool results
        itself, with calls spelled exactly as worker.tool_calls' grammar makes the model write
        them (Qwen 2.5 style): then it is given them as they are. Any other template
        (none for tools, or another call syntax) gets them folded into plain messages."""
        call = ToolCall(id="call_0", name="hearth_probe", arguments='{"a": 1}')
        tool = FunctionSpec(name="hearth_probe", description="hearth probe's description", parameters={"type": "object"}, enforced={})
        rendered = self._accepts([Turn("user", _SENTINEL.format(0)), Turn("assistant", "", (call,)),
                                  Turn("tool", _SENTINEL.format(1), tool_call_id=call.id), Turn("user", _SENTINEL.format(2))], [tool])
        if rendered is None:
            return False
        shown = [rendered.find(piece) for piece in (tool.description, _SENTINEL.format(0), call_text(call.name, call.arguments),
                                                    _SENTINEL.format(1), _SENTINEL.format(2))]
        return -1 not in shown and shown == sorted(shown)

    def _turn_markers(self) -> list[str]:
        """The text that opens a new turn (`[INST]`, `<|im_start|>user`): stop strings, so a
        model that writes one as plain text ends its answer there instead of rambling on into
        a made-up next turn. (As special tokens they are never printed at all.)"""
        rendered = self._render([Turn("user", _SENTINEL.format(0)), Turn("assistant", _SENTINEL.format(1)), Turn("user", _SENTINEL.format(2))])
        between = rendered.partition(_SENTINEL.format(1))[2].partition(_SENTINEL.format(2))[0]
        if self._eos:  # the end of the answer itself, not the start of a new turn
            between = between.replace(self._eos, " ")
        # A marker has punctuation: a plain word such as "user" would cut ordinary answers.
        return [piece for piece in between.split() if len(piece) >= 3 and not piece.isalnum()]

    def normalize(self, messages: Sequence[Message]) -> list[Turn]:
        """Messages reshaped into what this template accepts, losing no content."""
        turns = [Turn("system" if m.role == "developer" else m.role, m.content, tuple(m.tool_calls), m.tool_call_id) for m in messages]
        if not self.native_tools:  # worker.tool_calls folded calls and results into contents
            turns = [Turn("user" if t.role == "tool" else t.role, t.content) for t in turns]
        if self.folds_system:
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
        # The empty content of an answer of calls stays empty: templates test it (Qwen 2.5 then
        # writes no line for it). Others keep their sentinel, so the overheads counted with empty
        # contents (`Prompter.overheads`) include whatever a template writes around a content.
        json_pieces: list[str] = []
        rendered = self._render([Turn(t.role, _SENTINEL.format(i) if t.content or not t.tool_calls else "", t.tool_calls, t.tool_call_id)
                                 for i, t in enumerate(turns)], tools, json_pieces)
        tokens: list[int] = []
        shares = [0] * (len(turns) + 1)  # the last: the template after the last turn
        text: list[tuple[str, int]] = []  # the text since the last control token, with the turn each piece counts for
        for piece, special, turn in self._pieces(rendered, turns, json_pieces):
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

    def _pieces(self, rendered: str, turns: Sequence[Turn], json_pieces: Sequence[str]) -> list[tuple[str, bool, int]]:
        """The prompt's text in order, as (text, whether it is a control token, the turn it
        counts for): the template's text split at its control tokens, the contents and JSON
        in place of their sentinels. Template text counts for the turn whose content follows."""
        pieces: list[tuple[str, bool, int]] = []
        at = 0
        for match in [*_SENTINEL_RE.finditer(rendered), None]:
            template_text = rendered[at: match.start() if match else len(rendered)]
            for i, part in enumerate(self._controls.split(template_text) if self._controls else [template_text]):
                if part:
                    pieces.append((part, i % 2 == 1, -1))  # split() puts the matches at odd places
            if match and match.group(1):
                pieces.append((json_pieces[int(match.group(2))], False, -1))
            elif match:
                pieces.append((turns[int(match.group(2))].content, False, int(match.group(2))))
            at = match.end() if match else len(rendered)
        owner = len(turns)
        for i in reversed(range(len(pieces))):
            if pieces[i][2] >= 0:
                owner = pieces[i][2]
            else:
                pieces[i] = (pieces[i][0], pieces[i][1], owner)
        return pieces

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
