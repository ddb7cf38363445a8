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
(`FirstBytes`: the ASCII ones) and then only about the tokens whose first character it took,
plus every token that cannot be told so (its first byte opens a multi-byte character, it ends
generation, which the grammar judges by whether it may end, or its first byte is no token of
its own). Every other token gets the -inf logit the grammar's own apply would give it and the
chain runs on the same array, in the same order, as under the full filter: the same allowed
tokens, the same distribution and, seeded, the same draw (tests/test_sampling.py checks it
token for token). About 1.4 ms a refusal on SmolLM2.
"""

import ctypes
from functools import cached_property
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama, LlamaGrammar
from llama_cpp._internals import LlamaContext, LlamaSampler


class FirstBytes:
    """A vocabulary's tokens by the ASCII byte their text starts with, where a token of that
    byte alone exists to ask the grammar about (`first` -1: always asked)."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, n_vocab: int):
        buf = ctypes.create_string_buffer(64)
        first = np.full(n_vocab, -1, dtype=np.int16)
        single: dict[int, int] = {}
        for token in range(n_vocab):
            # The grammar matches a token's text as llama.cpp spells it with control tokens shown.
            n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
            if n <= 0 or not 0 < buf.raw[0] < 0x80 or llama_cpp.llama_vocab_is_eog(vocab, token):
                continue
            first[token] = buf.raw[0]
            if n == 1:
                single.setdefault(buf.raw[0], token)
        first[~np.isin(first, list(single))] = -1
        self.first = first
        self.singles = np.array(list(single.values()), dtype=np.int32)
        self.single_bytes = np.array(list(single), dtype=np.int16)


class GrammarChecked:
    """A sampler chain without the grammar, plus the grammar, sampled as described above.
    Duck-types the `LlamaSampler` that `Llama.sample` and `Llama.generate` call."""

    def __init__(self, chain: LlamaSampler, vocab: llama_cpp.llama_vocab_p, grammar: LlamaGrammar, n_vocab: int,
                 first_bytes: FirstBytes):
        self._chain, self._n_vocab, self._first_bytes = chain, n_vocab, first_bytes
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
        fb = self._first_bytes
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
        return chain if grammar is None else GrammarChecked(chain, self._model.vocab, grammar, self._n_vocab, self.first_bytes)

    @cached_property
    def first_bytes(self) -> FirstBytes:
        return FirstBytes(self._model.vocab, self._n_vocab)


def grammar_checked_llama(**kwargs: Any) -> Llama:
    """A model loaded as `Llama(**kwargs)` that samples under grammars as above."""
    return GrammarCheckedLlama(**kwargs)
