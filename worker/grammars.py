"""Grammars that make the model answer with JSON matching a schema, built once per distinct
schema and kept (least recently used dropped first).

The api sends only schemas it checked (`api.chat.structured`), reduced to what the grammar
enforces. They are converted by llama-cpp-python's converter with two fixes that keep the
JSON valid: its string characters admit raw control characters (a newline inside a string,
which JSON forbids), and its literals leave backslashes unescaped, so an enum value or
property name with a quote or a backslash came out wrong or did not parse. And it lets the
model put a space, or not, after each bracket, comma, colon and value: the JSON is laid out as
json.dumps writes it instead (`{"a": 1, "b": [1, 2]}`), as the chat templates show calls and
tools. The model's steps go to the content, not the layout, and where a key, a comma or a
closing bracket is the only text the grammar allows, worker.sampling writes it without asking
the model (there is no space that would make it a choice).
"""

import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp
from llama_cpp import LlamaGrammar
from llama_cpp.llama_grammar import BuiltinRule, SchemaConverter

from hearth.contract import ToolUse
from worker.tool_calls import Dialect

log = logging.getLogger(__name__)

CACHED = 32  # distinct schemas kept; a grammar is a few KB of text

# As llama.cpp's own converter now has it: no control characters (U+0000..U+001F, U+007F).
_CHAR = BuiltinRule(r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])', [])
_LITERAL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\r": "\\r", "\n": "\\n"}
_LITERAL_ESCAPE_RE = re.compile(r'[\\"\r\n]')
# A grammar's text in pieces: literals, character classes and repetitions (kept as they are),
# rule names, anything else.
_GBNF_PIECE = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[^}]*\}|([a-zA-Z0-9-]+)|.', re.S)
# The converter's optional space after a comma or a colon (made one space), or a literal or a
# character class, kept whole so that nothing inside one is read as rules.
_SEPARATOR = re.compile(r'"([,:])"\s+space\b|"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')
_SPACE_RULE = 'space ::= " "?'


class GrammarError(Exception):
    """A schema llama.cpp could not turn into a grammar (the api refuses what it cannot enforce,
    so this means an api and a worker of different versions)."""


class _Converter(SchemaConverter):
    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        rule_name: str = super()._add_primitive(name, _CHAR if name == "char" else rule)
        return rule_name

    def _format_literal(self, literal: str) -> str:
        return literal_rule(literal)


def literal_rule(literal: str) -> str:
    return '"' + _LITERAL_ESCAPE_RE.sub(lambda m: _LITERAL_ESCAPES[m.group(0)], literal) + '"'


def to_gbnf(schema: dict[str, Any]) -> str:
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]  # llama-cpp-python's SchemaConverter is untyped
    # The converter resolves references in place: give it its own copy.
    converter.visit(converter.resolve_refs(json.loads(json.dumps(schema)), "schema"), "")  # type: ignore[no-untyped-call]  # llama-cpp-python's SchemaConverter is untyped
    grammar: str = converter.format_grammar()  # type: ignore[no-untyped-call]  # llama-cpp-python's SchemaConverter is untyped
    return _laid_out(grammar)


def _laid_out(gbnf: str) -> str:
    """The converter's grammar with json.dumps' layout: one space after a comma or a colon,
    none anywhere else."""
    if _SPACE_RULE not in gbnf.splitlines():  # the layout below reads the converter's own rule
        raise GrammarError(f"unexpected space rule in the converter's grammar (llama-cpp-python is pinned): {gbnf[:200]!r}")
    gbnf = _SEPARATOR.sub(lambda m: f'"{m.group(1)} "' if m.group(1) else m.group(0), gbnf)
    return "\n".join('space ::= ""' if line == _SPACE_RULE else line for line in gbnf.splitlines())


def _prefixed(gbnf: str, prefix: str) -> str:
    """`gbnf` with `prefix` before each rule name, so several grammars share one text."""
    return _GBNF_PIECE.sub(lambda m: prefix + m.group(1) if m.group(1) else m.group(0), gbnf)


def tools_gbnf(tools: ToolUse, max_calls: int, dialect: Dialect) -> str:
    """Calls as `dialect` spells them, each function's arguments valid against its schema;
    with `auto`, a text answer instead (anything that does not start as a call does); with
    `parallel` (and a dialect that takes several), one call up to `max_calls` (then the answer
    must end: a small model would otherwise go on calling until its token limit)."""
    rules = [_prefixed(to_gbnf(f.enforced), f"f{i}-") for i, f in enumerate(tools.functions)]
    names = " | ".join(f"{literal_rule(json.dumps(f.name) + dialect.arguments_key)} f{i}-root" for i, f in enumerate(tools.functions))
    more = max_calls - 1 if tools.parallel and dialect.parallel else 0
    calls = f"call ({literal_rule(dialect.separator)} call){{0,{more}}}" if more else "call"
    text = [] if tools.mode == "required" else [f"text ::= [^{_class_chars(dialect.starts)}] [^\\x00]*"]
    return "\n".join([f"root ::= {' | '.join(['text'] * len(text) + ['calls'])}",
                      f"calls ::= {_optional(dialect.openings)} {calls} {_optional((dialect.closing,))}",
                      f"call ::= {literal_rule(dialect.head)} ({names}) {literal_rule(dialect.tail)}",
                      *text, *rules])


def _optional(literals: Sequence[str]) -> str:
    """A rule for one of `literals`, where "" means none at all."""
    present = [literal_rule(literal) for literal in literals if literal]
    if not present:
        return ""
    return f"({' | '.join(present)})" + ("?" if "" in literals else "")


def _class_chars(chars: str) -> str:
    """`chars` inside a GBNF character class."""
    return "".join("\\" + c if c in "]\\^-[" else c for c in chars)


class Grammars:
    def __init__(self, vocab: llama_cpp.llama_vocab_p, max_calls: int, dialect: Dialect, size: int = CACHED):
        self._vocab, self._max_calls, self._dialect = vocab, max_calls, dialect  # the dialect of the model's calls
        self._size = size
        self._cache: OrderedDict[str, LlamaGrammar] = OrderedDict()
        self.built = 0  # grammars built since start (the heartbeat publishes it)

    def get(self, schema: dict[str, Any]) -> LlamaGrammar:
        # The key keeps the caller's order of properties: it is the order of the answer's keys.
        return self._cached(json.dumps(schema, separators=(",", ":"), ensure_ascii=False), lambda: to_gbnf(schema))

    def for_tools(self, tools: ToolUse) -> LlamaGrammar:
        # Descriptions and the schemas as shown change the prompt, not the grammar.
        key = json.dumps([tools.mode, tools.parallel, [(f.name, f.enforced) for f in tools.functions]], separators=(",", ":"), ensure_ascii=False)
        return self._cached(key, lambda: tools_gbnf(tools, self._max_calls, self._dialect))

    def _cached(self, key: str, build: Callable[[], str]) -> LlamaGrammar:
        grammar = self._cache.get(key)
        if grammar is None:
            grammar = self._cache[key] = self._build(build)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return grammar

    def _build(self, build: Callable[[], str]) -> LlamaGrammar:
        started = time.perf_counter()
        try:
            gbnf = build()
        except Exception as exc:  # the converter asserts and raises on what it cannot handle
            raise GrammarError("The schema could not be turned into a grammar.") from exc
        # llama.cpp parses the grammar again for every generation; a text it cannot parse gives
        # a null sampler, which would crash the process: try it once here.
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
        if not sampler:
            raise GrammarError("The schema could not be turned into a grammar.")
        llama_cpp.llama_sampler_free(sampler)
        self.built += 1
        log.info("grammar built", extra={"grammar_chars": len(gbnf), "build_ms": round(1000 * (time.perf_counter() - started), 1)})
        return LlamaGrammar.from_string(gbnf, verbose=False)
