"""Turn chat messages into prompt tokens with the GGUF's own chat template.

Two traps this module exists for:
- Some templates (Mistral Instruct) raise on a `system` role or on non-alternating turns, and
  llama-cpp-python's built-in `mistral-instruct` format silently drops system messages. We
  probe the template once and, where it needs it, fold the system prompt into the first user
  turn and merge consecutive same-role messages, so the system prompt always reaches the model.
- Rendering then tokenizing the whole prompt with special tokens parsed would turn user text
  such as `<|im_end|>` into real control tokens: the caller's texts are rendered as sentinels
  and the prompt tokenized around them (worker.prompt_text).

A template that takes tools (`native_tools`) renders them, the assistant's calls and the tool
results itself, as its model was trained to read them; see worker.tool_calls.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hearth.contract import FunctionSpec, Message, ToolCall
from worker.prompt_text import JSON_PIECES, SENTINEL, Tokenize, at, control_pattern, tojson, tokenized, trim
from worker.tool_calls import DIALECTS, HERMES, Dialect, template_call, template_id, template_tool

# Used when a GGUF carries no template: ChatML, what most small instruct models speak.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message: str) -> None:
    raise TemplateError(message)


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
        env.filters["tojson"] = tojson
        env.filters["trim"] = trim
        self._template = env.from_string(source or CHATML)
        self._bos, self._eos = bos_token, eos_token
        self._tokenize = tokenize
        self._controls = control_pattern(controls)  # parsed as such in the template's own text only
        self.folds_system = self._accepts([Turn("system", "s"), Turn("user", "u")]) is None
        self.merges_turns = self._accepts([Turn("user", "u"), Turn("user", "u")]) is None
        self.needs_user_first = self._accepts([Turn("assistant", "a"), Turn("user", "u")]) is None
        # Mistral v0.3's template shows the system prompt (and the tools) only with a question:
        # a chat of system messages alone would reach the model as nothing.
        self.drops_lone_system = "hearth system" not in (self._accepts([Turn("system", "hearth system")]) or "")
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
            # Llama 3.1's template shows the tools with the first message after the system
            # prompt and refuses a chat without one: it then shows them in the system prompt.
            tools_in_user_message=any(t.role != "system" for t in turns),
            bos_token=self._bos,
            eos_token=self._eos,
            **({JSON_PIECES: json_pieces} if json_pieces is not None else {}),
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
        rendered = self._accepts([Turn("user", SENTINEL.format(0)), Turn("assistant", "", (call,)),
                                  Turn("tool", SENTINEL.format(1), tool_call_id=call.id), Turn("assistant", SENTINEL.format(2)),
                                  Turn("user", SENTINEL.format(3))], [tool])
        if rendered is None or tool.description not in rendered:
            return None
        texts = [at(rendered, i) for i in range(4)]
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
        rendered = self._render([Turn("user", SENTINEL.format(0)), Turn("assistant", SENTINEL.format(1)), Turn("user", SENTINEL.format(2))])
        answer, question = at(rendered, 1), at(rendered, 2)
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
        if (self.folds_system or (self.drops_system_after_results and turns and turns[-1].role == "tool")
                or (self.drops_lone_system and all(t.role == "system" for t in turns))):
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
            [Turn(t.role, SENTINEL.format(i) if t.content or not t.tool_calls else "", t.tool_calls, t.tool_call_id) for i, t in enumerate(turns)],
            [f.model_copy(update={"description": SENTINEL.format(len(turns) + i)}) if f.description else f for i, f in enumerate(tools)],
            json_pieces)
        tokens, shares = tokenized(rendered, self._controls, texts, len(turns), json_pieces, tokenize)
        if len(turns) != len(messages):
            return tokens, [len(tokens) // max(len(messages), 1)] * len(messages)
        return tokens, shares[: len(messages)]


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
