"""A model's own view of a conversation: its chat template, its tokens, and what fits.

Built from any `Llama` of the model, including a vocab-only one: the generation loop and
the pre-queue size check use the same code, so they agree on every count.
"""

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cache

import llama_cpp
import numpy as np
from llama_cpp import Llama

from hearth.contract import Message, ToolUse
from hearth.documents import DocumentText
from worker.context import Counted, Plan, plan, reserved
from worker.document_index import DocumentIndex
from worker.documents_prompt import with_documents
from worker.prompt import ChatTemplate
from worker.prompt_text import Tokenize
from worker.settings import TOOL_MAX_PARALLEL_CALLS
from worker.tool_calls import prompt_messages

SEPARATOR_TOKENS = 4  # margin per message: folded or merged messages are joined with "\n\n"
# A text this long (a document's whole text, which every question about it counts again: 0.15 to
# 0.4 s for 200 pages on 2 busy cores) has its count kept across plans, for this many texts.
LONG_TEXT_CHARS = 8192
KEPT_COUNTS = 64


class Prompter:
    def __init__(self, llama: Llama, n_ctx: int, default_max_tokens: int, index: DocumentIndex | None = None,
                 max_calls: int = TOOL_MAX_PARALLEL_CALLS):
        self._llama, self.n_ctx, self._default_max_tokens = llama, n_ctx, default_max_tokens
        self._index = index or DocumentIndex()  # long documents' chunks, shared with the worker's other prompters
        self._long_counts: OrderedDict[tuple[int, int], int] = OrderedDict()  # (length, hash) -> tokens, least recently used first
        self._max_calls = max_calls  # parallel calls in one answer, as the tools' description says
        meta = llama.metadata
        bos, eos = llama.token_bos(), llama.token_eos()
        self.template = ChatTemplate(
            meta.get("tokenizer.chat_template"),
            bos_token=self._piece(bos),
            eos_token=self._piece(eos),
            tokenize=self._tokenize,
            controls=self._controls(),
        )
        self._bos = bos if meta.get("tokenizer.ggml.add_bos_token") == "true" else None

    def _tokenize(self, text: bytes, special: bool) -> list[int]:
        """llama.cpp's tokenizer with a buffer sized to the text: `Llama.tokenize` allocates
        one of the trained context's size per call, which doubles the cost of counting a chat
        of many short messages (one call per message)."""
        vocab = self._llama._model.vocab
        size = len(text) + 8
        while True:
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(vocab, text, len(text), buffer, size, False, special)
            if n >= 0:
                return buffer[:n]
            size = -n  # too small: llama.cpp says how many tokens there are

    def _controls(self) -> list[str]:
        """The texts that llama.cpp parses as special tokens only when asked to (control and
        unknown tokens; user-defined ones it always parses)."""
        vocab = self._llama._model.vocab
        special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        return [llama_cpp.llama_vocab_get_text(vocab, token).decode(errors="replace")
                for token in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_get_attr(vocab, token) & special]

    def _piece(self, token: int) -> str:
        return self._llama.detokenize([token], special=True).decode(errors="replace") if token >= 0 else ""

    def count(self, text: str) -> int:
        """Tokens of `text` as plain text (a document's, a chunk's)."""
        return self._count(text, self._tokenize)

    def _count(self, text: str, tokenize: Tokenize) -> int:
        if len(text) < LONG_TEXT_CHARS:
            return len(tokenize(text.encode(errors="replace"), False))
        key = (len(text), hash(text))
        if key in self._long_counts:
            self._long_counts.move_to_end(key)
        else:
            self._long_counts[key] = len(tokenize(text.encode(errors="replace"), False))
            if len(self._long_counts) > KEPT_COUNTS:
                self._long_counts.popitem(last=False)
        return self._long_counts[key]

    def tokens(self, messages: Sequence[Message], tools: ToolUse | None = None) -> list[int]:
        """The prompt of `messages` as the model reads it, with `tools` (as `plan` shows them)."""
        return self._counted(self._shown(messages, tools), self._tokenize, tools).tokens

    def _shown(self, messages: Sequence[Message], tools: ToolUse | None) -> list[Message]:
        """The messages to render: as they are for a template that takes tools, else with the
        tools and calls folded in (worker.tool_calls)."""
        return list(messages) if self.template.native_tools else prompt_messages(messages, tools, self._max_calls)

    def _counted(self, messages: Sequence[Message], tokenize: Tokenize, tools: ToolUse | None = None) -> Counted:
        native = tools.functions if tools and self.template.native_tools else ()
        tokens, shares = self.template.counted(messages, tokenize, native)
        if self._bos is not None and tokens[:1] != [self._bos]:
            tokens.insert(0, self._bos)
        return Counted(tokens, shares)

    def overheads(self) -> tuple[int, int]:
        """Template tokens of a one-message chat, and per further message: with each message's
        UTF-8 length (a token is at least one byte), an upper bound on any chat's prompt."""
        empty = [Message(role="user", content="")]
        base = len(self.tokens(empty))
        more = len(self.tokens([*empty, Message(role="assistant", content=""), Message(role="user", content="")]))
        return base, max(0, more - base) // 2 + SEPARATOR_TOKENS

    def plan(self, messages: Sequence[Message], max_tokens: int | None, tools: ToolUse | None = None,
             documents: Mapping[str, DocumentText] | None = None, similarity: Mapping[str, np.ndarray] | None = None) -> Plan:
        """The prompt that fits, with `tools` and the history's calls as worker.tool_calls
        shows them (natively, or the generic system message: never left out), and the
        attached `documents` (by id) whole or in parts (worker.documents_prompt), ranked with
        their chunks' `similarity` to the question where they have vectors (DocumentIndex.ranked)."""
        # A plan counts overlapping parts of one chat several times, and a template repeats
        # the same text around every message: each distinct piece is tokenized once.
        memo = cache(self._tokenize)

        limit = self.n_ctx - reserved(max_tokens, self._default_max_tokens, self.n_ctx)

        def fit(chat: Sequence[Message], room: int = 0) -> Plan:
            """`chat` fitted with `room` more tokens left free (for documents): an answer of
            that much more is planned, and older turns are left out for it."""
            shown = self._shown(chat, tools)
            answer = self.n_ctx - limit + room if room else max_tokens
            fitted = plan(shown, answer, self._default_max_tokens, self.n_ctx, lambda c: self._counted(c, memo, tools))
            if fitted.kept is None:
                return fitted
            first = len(shown) - len(chat)  # after the tools' description
            return replace(fitted, kept=tuple(i - first for i in fitted.kept if i >= first))

        return with_documents(messages, documents or {}, fit, lambda base: limit - len(base.tokens),
                              lambda text: self._count(text, memo),
                              lambda long, question: self._index.ranked(long, question, similarity))
