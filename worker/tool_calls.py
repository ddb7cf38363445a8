"""How function calls are spelled, shown to a model, and read back as call events as they come.

A model writes its calls in a dialect (`Dialect`): the grammar (worker.grammars.tools_gbnf)
allows nothing else, with `auto` a text answer that cannot start like a call.
- Hermes (`HERMES`), Qwen 2.5's and Hearth's generic format: one block per call, blocks
  separated by a newline,

      <tool_call>
      {"name": "get_weather", "arguments": {"city": "Paris"}}
      </tool_call>

- Llama 3.1 (`LLAMA31`): `{"name": "get_weather", "parameters": {"city": "Paris"}}`, plain
  or after `<|python_tag|>`, one call per answer (its template takes no more);
- Mistral v0.3 (`MISTRAL`): `[TOOL_CALLS] [{"name": "get_weather", "arguments": {...}}, ...]`.

Two ways to show the tools, the history's calls and their results:
- native: a chat template that renders them itself, with calls in one of these dialects
  (worker.prompt.ChatTemplate finds out by rendering a probe), is given them as transformers
  passes them (`tools=`, `tool_calls`, `tool` messages), so the model reads its own training
  format and writes the syntax it was taught;
- generic, for every other template: the tools are described in a system message, earlier
  calls are shown in the Hermes syntax and their results as `<tool_response>` blocks in user
  turns (`prompt_messages`), so any chat template can carry them.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hearth.contract import FunctionSpec, Message, TokenEvent, ToolCall, ToolCallEvent, ToolUse

AnswerEvent = TokenEvent | ToolCallEvent


@dataclass(frozen=True)
class Dialect:
    """An answer of calls: one of `openings`, then each call as `head` + its name as JSON +
    `arguments_key` + its arguments (a JSON object) + `tail`, separated by `separator`, then
    `closing`."""

    name: str
    head: str
    arguments_key: str
    tail: str
    separator: str = ""
    openings: tuple[str, ...] = ("",)
    closing: str = ""
    parallel: bool = True  # several calls in one answer

    def call_start(self, name: str, arguments: str) -> str:
        """An answer's text up to the end of its first call's arguments."""
        return f"{self.openings[0]}{self.head}{json.dumps(name)}{self.arguments_key}{arguments}"

    def calls_text(self, calls: Sequence[tuple[str, str]]) -> str:
        """An answer of these (name, arguments) calls, as the grammar lets the model write it."""
        return self.openings[0] + self.separator.join(
            f"{self.head}{json.dumps(name)}{self.arguments_key}{arguments}{self.tail}" for name, arguments in calls) + self.closing

    @property
    def starts(self) -> str:
        """The characters an answer of calls can start with (a text answer starts otherwise)."""
        return "".join(sorted({(opening + self.head)[0] for opening in self.openings}))


HERMES = Dialect("hermes", '<tool_call>\n{"name": ', ', "arguments": ', "}\n</tool_call>", separator="\n")
LLAMA31 = Dialect("llama3.1", '{"name": ', ', "parameters": ', "}", openings=("", "<|python_tag|>"), parallel=False)
MISTRAL = Dialect("mistral", '{"name": ', ', "arguments": ', "}", separator=", ", openings=("[TOOL_CALLS] [",), closing="]")
DIALECTS = (HERMES, LLAMA31, MISTRAL)


def call_text(name: str, arguments: str) -> str:
    """One call in the generic (Hermes) format."""
    return HERMES.calls_text([(name, arguments)])


def call_id(job_id: str, index: int) -> str:
    """Unique per answer, and the same in every attempt of a batch line."""
    return f"call_{job_id}_{index}"


def template_tool(function: FunctionSpec) -> dict[str, Any]:
    """A tool as chat templates that take tools read it (transformers' format)."""
    return {"type": "function", "function": {"name": function.name, "description": function.description, "parameters": function.parameters}}


def template_call(call: ToolCall) -> dict[str, Any]:
    """A call as those templates read it: its arguments an object, which they write as JSON."""
    try:
        arguments: Any = json.loads(call.arguments)
    except json.JSONDecodeError:  # the grammar's answers parse; a client's history might not
        arguments = call.arguments
    return {"id": template_id(call.id), "type": "function", "function": {"name": call.name, "arguments": arguments}}


def template_id(call_id: str) -> str:
    """A call's id as templates get it: 9 letters and digits, the only ids Mistral v0.3's
    template takes (and, being derived, never the caller's text in the prompt)."""
    return hashlib.sha256(call_id.encode(errors="replace")).hexdigest()[:9]


def describe(tools: ToolUse, max_calls: int) -> str:
    functions = "\n".join(json.dumps({"name": f.name, "description": f.description, "parameters": f.parameters}, ensure_ascii=False)
                          for f in tools.functions)
    how = "You must call a function." if tools.mode == "required" else "If no function is needed, answer in plain text instead."
    several = f" To call several (at most {max_calls}), write one block after another." if tools.parallel else " Call one function at a time."
    return (
        "You can call functions. Each is described by a JSON object with its name, description and parameters "
        f"(a JSON Schema):\n{functions}\n\nTo call a function, answer with only this block:\n"
        f"{call_text('<function name>', '<its arguments as a JSON object>')}\n{how}{several} "
        "The results come back in <tool_response> blocks."
    )


def prompt_messages(messages: Sequence[Message], tools: ToolUse | None, max_calls: int) -> list[Message]:
    """Plain messages that show `tools` (at most `max_calls` calls in one answer) and the
    history's calls and results to any template; a chat without either is returned as it is."""
    if tools is None and not any(m.tool_calls or m.role == "tool" for m in messages):
        return list(messages)
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    out = [Message(role="system", content=describe(tools, max_calls))] if tools else []
    for m in messages:
        if m.tool_calls:
            calls = HERMES.calls_text([(c.name, c.arguments) for c in m.tool_calls])
            out.append(Message(role=m.role, content=f"{m.content}\n{calls}" if m.content else calls))
        elif m.role == "tool":
            result = json.dumps({"name": names.get(m.tool_call_id or ""), "content": m.content}, ensure_ascii=False)
            out.append(Message(role="user", content=f"<tool_response>\n{result}\n</tool_response>"))
        else:
            out.append(m)
    return out


class CallParser:
    """The answer's text, fed as it is generated, as events: a text answer as token events,
    calls as tool call events (the first part of each with its id and name, then its
    arguments in pieces). The grammar guarantees the shape, so this only follows it."""

    def __init__(self, job_id: str, dialect: Dialect):
        self._job_id, self._dialect = job_id, dialect
        self._calls: bool | None = None  # decided by the answer's first character
        self._state = "head"  # head (up to the arguments), arguments, tail (after them)
        self._buffer = ""
        self._depth, self._in_string, self._escaped = 0, False, False
        self._tokens = 0  # tokens fed whose text is in no event yet
        self.count = 0  # calls begun

    def feed(self, text: str, tokens: int) -> list[AnswerEvent]:
        self._tokens += tokens
        if text and self._calls is None:
            self._calls = text[0] in self._dialect.starts
        if not text:
            return []
        if not self._calls:
            return [self._counted(TokenEvent(text=text, tokens=0))]
        events: list[AnswerEvent] = []
        arguments = ""
        for char in text:
            if self._state == "arguments":
                arguments += char
                if self._closes(char):
                    self._state = "tail"
            else:
                self._buffer += char
                head, key = self._dialect.head, self._dialect.arguments_key
                if self._state == "head" and self._buffer.endswith(key):  # the buffer: any opening or separator, the head, the name
                    name = json.loads(self._buffer[self._buffer.index(head) + len(head): -len(key)])
                    events.append(ToolCallEvent(index=self.count, id=call_id(self._job_id, self.count), name=name))
                    self.count += 1
                    self._state, self._buffer = "arguments", ""
                elif self._state == "tail" and self._buffer.endswith(self._dialect.tail):
                    self._state, self._buffer = "head", ""
            if arguments and self._state != "arguments":
                events.append(ToolCallEvent(index=self.count - 1, arguments=arguments))
                arguments = ""
        if arguments:
            events.append(ToolCallEvent(index=self.count - 1, arguments=arguments))
        if events:
            events[0] = self._counted(events[0])
        return events

    def finish(self) -> list[AnswerEvent]:
        """What is left to count: tokens whose text made no event (a call's closing lines)."""
        if not self._tokens:
            return []
        if self.count:
            return [self._counted(ToolCallEvent(index=self.count - 1))]
        return [self._counted(TokenEvent(text="", tokens=0))]

    def _counted(self, event: AnswerEvent) -> AnswerEvent:
        counted = event.model_copy(update={"tokens": event.tokens + self._tokens})
        self._tokens = 0
        return counted

    def _closes(self, char: str) -> bool:
        """Follows the arguments' JSON; whether `char` ended its outermost object."""
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._in_string = False
        elif char == '"':
            self._in_string = True
        elif char in "{[":
            self._depth += 1
        elif char in "}]":
            self._depth -= 1
            return self._depth == 0
        return False
