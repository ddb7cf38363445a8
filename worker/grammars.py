"""Grammars that make the model answer with JSON matching a schema, built once per distinct
schema and kept (least recently used dropped first).

The api sends only schemas it checked (`api.chat.structured`), reduced to what the grammar
enforces. They are converted by llama-cpp-python's converter with two fixes that keep the
JSON valid: its string characters admit raw control characters (a newline inside a string,
which JSON forbids), and its literals leave backslashes unescaped, so an enum value or
property name with a quote or a backslash came out wrong or did not parse.
"""

import json
import logging
import re
import time
from collections import OrderedDict
from typing import Any

import llama_cpp
from llama_cpp import LlamaGrammar
from llama_cpp.llama_grammar import BuiltinRule, SchemaConverter

log = logging.getLogger(__name__)

CACHED = 32  # distinct schemas kept; a grammar is a few KB of text

# As llama.cpp's own converter now has it: no control characters (U+0000..U+001F, U+007F).
_CHAR = BuiltinRule(r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])', [])
_LITERAL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\r": "\\r", "\n": "\\n"}
_LITERAL_ESCAPE_RE = re.compile(r'[\\"\r\n]')


class GrammarError(Exception):
    """A schema llama.cpp could not turn into a grammar (the api refuses what it cannot enforce,
    so this means an api and a worker of different versions)."""


class _Converter(SchemaConverter):
    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        rule_name: str = super()._add_primitive(name, _CHAR if name == "char" else rule)
        return rule_name

    def _format_literal(self, literal: str) -> str:
        return '"' + _LITERAL_ESCAPE_RE.sub(lambda m: _LITERAL_ESCAPES[m.group(0)], literal) + '"'


def to_gbnf(schema: dict[str, Any]) -> str:
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]  # llama-cpp-python's SchemaConverter is untyped
    # The converter resolves references in place: give it its own copy.
    converter.visit(converter.resolve_refs(json.loads(json.dumps(schema)), "schema"), "")  # type: ignore[no-untyped-call]  # llama-cpp-python's SchemaConverter is untyped
    grammar: str = converter.format_grammar()  # type: ignore[no-untyped-call]  # llama-cpp-python's SchemaConverter is untyped
    return grammar


class Grammars:
    def __init__(self, vocab: llama_cpp.llama_vocab_p, size: int = CACHED):
        self._vocab = vocab
        self._size = size
        self._cache: OrderedDict[str, LlamaGrammar] = OrderedDict()
        self.built = 0  # grammars built since start (the heartbeat publishes it)

    def get(self, schema: dict[str, Any]) -> LlamaGrammar:
        # The key keeps the caller's order of properties: it is the order of the answer's keys.
        key = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
        grammar = self._cache.get(key)
        if grammar is None:
            grammar = self._cache[key] = self._build(schema)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return grammar

    def _build(self, schema: dict[str, Any]) -> LlamaGrammar:
        started = time.perf_counter()
        try:
            gbnf = to_gbnf(schema)
        except Exception as exc:  # the converter asserts and raises on what it cannot handle
            raise GrammarError("The response_format schema could not be turned into a grammar.") from exc
        # llama.cpp parses the grammar again for every generation; a text it cannot parse gives
        # a null sampler, which would crash the process: try it once here.
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
        if not sampler:
            raise GrammarError("The response_format schema could not be turned into a grammar.")
        llama_cpp.llama_sampler_free(sampler)
        self.built += 1
        log.info("grammar built", extra={"grammar_chars": len(gbnf), "build_ms": round(1000 * (time.perf_counter() - started), 1)})
        return LlamaGrammar.from_string(gbnf, verbose=False)
