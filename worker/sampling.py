"""Grammar-constrained sampling that checks the grammar against one token, rarely the vocabulary.

llama-cpp-python puts the grammar into its sampler chain, so llama.cpp matches every candidate
of the vocabulary (49k for SmolLM2) against the grammar at every step: a JSON answer ran at
0.6x the speed of free text. llama.cpp's own sampler (`common_sampler_sample`) samples without
the grammar first and asks the grammar about the chosen token only; only when the grammar
refuses it are the candidates filtered by the grammar and the token sampled again. The
allowed tokens are the same either way: a token is kept only if the grammar accepts it.

A refusal (a quarter of a tool call's steps, mostly where the grammar allows a few tokens
only) cost a grammar match of the whole vocabulary, 4 ms. llama.cpp's grammar matches a
token's characters one by one from its current stacks and refuses the token at the first
character no stack can take; so a token is accepted only if its first character alone is, and
when the grammar refuses the token that is a character alone it refuses every token beginning
with that character. On a refusal the grammar is asked about each single-character token first
(`VocabIndex`: the ASCII ones) and then only about the tokens whose first character it took,
plus every token that cannot be told so (its first byte opens a multi-byte character, it ends
generation, which the grammar judges by whether it may end, or its first byte is no token of
its own). Every other token gets the -inf logit the grammar's own apply would give it and the
chain runs on the same array, in the same order, as under the full filter: the same allowed
tokens, the same distribution and, seeded, the same draw (tests/test_sampling.py checks it
token for token). About 1.4 ms a refusal on SmolLM2.

Where the grammar then allows one text alone (a JSON key, `", "`, a closing bracket: the
grammar fixes the layout), `GrammarChecked.forced` finds it by asking the grammar about one
token per first byte, character after character, and worker.engine evaluates its tokens in
one batch with the chosen token instead of a step each (as SGLang's jump-forward decoding
does): a batch of 8 tokens costs SmolLM2 about three steps' time here. A byte that opens a
multi-byte character is asked about as a token of its own. llama.cpp refuses it in a negated
class that excludes any character it may begin, even one allowing others it begins: exact
for the classes worker.grammars writes (their negated classes exclude ASCII only; the api
refuses patterns), not for a negated class excluding some non-ASCII characters.
"""

import ctypes
from functools import cached_property
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama, LlamaGrammar
from llama_cpp._internals import LlamaContext, LlamaSampler


class VocabIndex:
    """A vocabulary's tokens by the byte their text starts with, for asking the grammar about
    few tokens: `first`, the ASCII byte a token starts with where a token of that byte alone
    exists to ask about (-1: always asked); `probe`, a token for each byte that has one of its
    own, plus every token whose first byte has none, or whose text is too long to read here,
    and the tokens that end generation (what the grammar takes next is known from these); and
    each text's token, for writing a text the grammar forced."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, n_vocab: int):
        self._vocab = vocab
        buf = ctypes.create_string_buffer(64)
        starts = np.full(n_vocab, -1, dtype=np.int16)  # the first byte; -1: an end, an empty text, or one longer than `buf`
        single: dict[int, int] = {}
        pieces: dict[bytes, int] = {}
        eog: list[int] = []
        for token in range(n_vocab):
            # The grammar matches a token's text as llama.cpp spells it with control tokens shown.
            n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                eog.append(token)
                continue
            if n <= 0:
                continue  # empty (the grammar refuses it), or longer than `buf` (probed, never written)
            text = buf.raw[:n]
            starts[token] = text[0]
            attr = llama_cpp.llama_vocab_get_attr(vocab, token)
            if not attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL and (text not in pieces or not attr & llama_cpp.LLAMA_TOKEN_ATTR_BYTE):
                pieces[text] = token  # a byte-fallback token only where no text token spells it
            if n == 1:
                single.setdefault(text[0], token)
        has_single = np.isin(starts, list(single))
        self.first = np.where(has_single & (starts < 0x80), starts, -1).astype(np.int16)
        ascii_single = {byte: token for byte, token in single.items() if byte < 0x80}
        self.singles = np.array(list(ascii_single.values()), dtype=np.int32)
        self.single_bytes = np.array(list(ascii_single), dtype=np.int16)
        self.char_of = {token: byte for byte, token in ascii_single.items()}
        self.eog = frozenset(eog)
        unread = np.flatnonzero(~has_single).astype(np.int32)  # includes the eog and the empty ones
        self.probe = np.union1d(np.array(list(single.values()), dtype=np.int32), unread).astype(np.int32)
        for byte, token in ascii_single.items():
            pieces.setdefault(bytes([byte]), token)  # every character the grammar forces is spelt
        self._pieces = pieces
        self._longest = max(map(len, pieces), default=1)

    def tokens(self, text: bytes) -> list[int]:
        """Tokens that spell `text` exactly, as the tokenizer writes it within a longer text:
        its own tokens where they spell it (byte-level BPE); else, as SentencePiece writes a
        space before any text it is given, those it writes for `text` after a line break (which
        no piece spans, as byte fallback writes it); else the longest known text at each place."""
        own = self._tokenize(text)
        if self._spells(own, text):
            return own
        after_break, spelt = self._tokenize(b"\n" + text), b""
        for n, token in enumerate(after_break):
            spelt += self._piece(token)
            if spelt in (b"\n", b" \n") and self._spells(after_break[n + 1:], text):
                return after_break[n + 1:]
            if len(spelt) >= 2:
                break
        tokens, at = [], 0
        while at < len(text):
            size = next(size for size in range(min(self._longest, len(text) - at), 0, -1)
                        if text[at: at + size] in self._pieces or size == 1)
            tokens.append(self._pieces[text[at: at + size]])
            at += size
        return tokens

    def _tokenize(self, text: bytes) -> list[int]:
        buf = (llama_cpp.llama_token * (len(text) + 1))()
        n = llama_cpp.llama_tokenize(self._vocab, text, len(text), buf, len(buf), False, False)
        return list(buf[:n]) if n > 0 else []

    def _spells(self, tokens: list[int], text: bytes) -> bool:
        return b"".join(self._piece(token) for token in tokens) == text

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n] if n > 0 else b""


class GrammarChecked:
    """A sampler chain without the grammar, plus the grammar, sampled as described above.
    Duck-types the `LlamaSampler` that `Llama.sample` and `Llama.generate` call."""

    def __init__(self, chain: LlamaSampler, vocab: llama_cpp.llama_vocab_p, grammar: LlamaGrammar, n_vocab: int,
                 vocab_index: VocabIndex):
        self._chain, self._n_vocab, self._vocab_index = chain, n_vocab, vocab_index
        self._grammar = llama_cpp.llama_sampler_init_grammar(vocab, grammar._grammar.encode(), grammar._root.encode())
        if not self._grammar:  # worker.grammars tried the text when it was built
            raise ValueError("grammar could not be parsed")
        self._all = (llama_cpp.llama_token_data * n_vocab)()
        self._all_view: Any = np.ctypeslib.as_array(self._all)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._some = (llama_cpp.llama_token_data * n_vocab)()
        self._some_view: Any = np.ctypeslib.as_array(self._some)

    def close(self) -> None:
        if self._grammar:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None
        self._chain.close()

    def __del__(self) -> None:
        self.close()

    def sample(self, ctx: LlamaContext, idx: int = -1) -> int:
        logits = llama_cpp.llama_get_logits_ith(ctx.ctx, idx)
        token = self._pick(logits)
        if not self._allows(np.array([token], dtype=np.int32))[0]:
            token = self._pick(logits, self._refused())
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._grammar, token)
        self._chain.accept(token)

    def forced(self, limit: int) -> tuple[list[int], int | None]:
        """After a sampled token: the text the grammar now allows alone, as tokens (up to
        `limit` characters), accepted as if sampled; and an end-of-generation token if the
        grammar then allows only the end. A key, a comma or a closing bracket of a JSON answer
        (laid out by worker.grammars) is such a text: written without asking the model, it is
        evaluated in one batch with the sampled token (worker.engine), several tokens for the
        price of about one. When only the character `c` is allowed, every allowed token starts
        with `c`, which is the text either way; the tokens are the tokenizer's."""
        fb, text = self._vocab_index, bytearray()
        while True:
            allowed = fb.probe[self._allows(fb.probe)]
            char = fb.char_of.get(int(allowed[0])) if len(allowed) == 1 else None
            if char is None or len(text) == limit:
                break
            llama_cpp.llama_sampler_accept(self._grammar, int(allowed[0]))  # the grammar reads characters
            text.append(char)
        tokens = fb.tokens(bytes(text)) if text else []
        for token in tokens:
            self._chain.accept(token)
        ends = len(allowed) > 0 and fb.eog.issuperset(allowed.tolist())
        return tokens, int(allowed[0]) if ends else None

    def _pick(self, logits: Any, refused: np.ndarray | None = None) -> int:
        view = self._all_view
        view["id"] = self._ids
        view["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        view["p"] = 0.0
        if refused is not None:
            view["logit"][refused] = -np.inf  # what the grammar's own apply does to them
        # Samplers may point `data` elsewhere and shrink `size`: a fresh array each time.
        candidates = llama_cpp.llama_token_data_array(data=self._all, size=self._n_vocab, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self._chain.sampler, ctypes.byref(candidates))
        return int(candidates.data[candidates.selected].id)

    def _refused(self) -> np.ndarray:
        """Which tokens the grammar refuses now (a mask over the vocabulary)."""
        fb = self._vocab_index
        taken = np.zeros(256, dtype=bool)
        taken[fb.single_bytes[self._allows(fb.singles)]] = True
        asked = np.flatnonzero((fb.first < 0) | taken[fb.first]).astype(np.int32)  # -1 indexes taken[255]: asked anyway
        refused = np.ones(self._n_vocab, dtype=bool)
        refused[asked[self._allows(asked)]] = False
        return refused

    def _allows(self, tokens: np.ndarray) -> np.ndarray:
        """Which of `tokens` the grammar accepts now."""
        some = self._some_view[: len(tokens)]
        some["id"], some["logit"], some["p"] = tokens, 0.0, 0.0
        block = llama_cpp.llama_token_data_array(data=self._some, size=len(tokens), selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(block))
        allowed: np.ndarray = ~np.isinf(self._some_view["logit"][: len(tokens)])
        return allowed


class GrammarCheckedLlama(Llama):
    """`Llama` whose generations with a grammar sample through `GrammarChecked`. (It hooks
    `_init_sampler`, which `generate` calls to build its chain: llama-cpp-python is pinned.)"""

    def _init_sampler(self, grammar: LlamaGrammar | None = None, **kwargs: Any) -> Any:  # type: ignore[override]  # `generate` passes keywords only
        chain = super()._init_sampler(**kwargs)
        return chain if grammar is None else GrammarChecked(chain, self._model.vocab, grammar, self._n_vocab, self.vocab_index)

    @cached_property
    def vocab_index(self) -> VocabIndex:
        return VocabIndex(self._model.vocab, self._n_vocab)


def grammar_checked_llama(**kwargs: Any) -> Llama:
    """A model loaded as `Llama(**kwargs)` that samples under grammars as above."""
    return GrammarCheckedLlama(**kwargs)
