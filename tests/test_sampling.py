"""worker.sampling's refusal path asks the grammar about the tokens whose first character it
takes, not the vocabulary: on the real SmolLM2, under a JSON schema's grammar and a tool-call
grammar, it picks exactly the tokens the full grammar match picks, greedy and seeded. A text
the grammar allows alone is written without a step of the model, in json.dumps' layout, with
tokens that spell it exactly (SentencePiece too)."""

import ctypes
import json
import threading
import time
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
from llama_cpp import LlamaGrammar

from api.chat.schemas import ChatCompletionRequest
from bench.tool_calls import TOOLS
from hearth.contract import SamplingParams
from tests.sentencepiece import sentencepiece_vocab
from tools.shaped_gguf import write_shaped_gguf
from worker.engine import Engine
from worker.grammars import to_gbnf
from worker.models import catalog, load_vocab
from worker.sampling import GrammarChecked, VocabIndex
from worker.settings import WorkerSettings

SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}}, "required": ["name", "age", "tags"]}


@pytest.fixture(scope="module")
def engine() -> Engine:
    settings = WorkerSettings()
    (model,) = catalog(settings).values()
    return Engine(settings, model, None)


def full_match(self: GrammarChecked) -> np.ndarray:
    """The reference: the grammar asked about every token of the vocabulary."""
    return ~self._allows(self._ids)


def generated(engine: Engine, grammar: LlamaGrammar, prompt: str, temp: float, seed: int) -> list[int]:
    engine.llama.set_seed(seed)
    engine.llama.reset()  # the prompt evaluated afresh: logits of a reused prefix may differ in the last bits
    tokens = engine.llama.tokenize(prompt.encode())
    out: list[int] = []
    for token in engine.llama.generate(tokens, temp=temp, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, grammar=grammar):
        if engine.llama.token_eos() == token or len(out) == 80:
            break
        out.append(token)
    return out


def grammars(engine: Engine) -> dict[str, LlamaGrammar]:
    tools = ChatCompletionRequest.model_validate({"model": "", "messages": [{"role": "user", "content": "hi"}],
                                                   "tools": TOOLS, "tool_choice": "required"}).tool_use()
    assert tools is not None
    return {"schema": engine.grammars.get(SCHEMA), "tools": engine.grammars.for_tools(tools)}


@pytest.mark.parametrize("kind", ["schema", "tools"])
@pytest.mark.parametrize("temp", [0.0, 0.7])
def test_same_tokens_as_the_full_grammar_match(engine: Engine, monkeypatch: pytest.MonkeyPatch, kind: str, temp: float) -> None:
    grammar = grammars(engine)[kind]
    refusals = 0
    refused = GrammarChecked._refused

    def counted(self: GrammarChecked) -> Any:
        nonlocal refusals
        refusals += 1
        return refused(self)

    monkeypatch.setattr(GrammarChecked, "_refused", counted)
    for seed, prompt in enumerate(["Describe a person as JSON.", "What is the weather in Oslo?", "Play some jazz."]):
        fast = generated(engine, grammar, prompt, temp, seed)
        with monkeypatch.context() as m:
            m.setattr(GrammarChecked, "_refused", full_match)
            assert generated(engine, grammar, prompt, temp, seed) == fast
    assert refusals > 0  # the path under test ran


def chat(engine: Engine, question: str) -> list[int]:
    return engine.llama.tokenize(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n".encode(), special=True)


def evaluations(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The batches the model evaluates from now on, as they are evaluated."""
    evaluated: list[list[int]] = []
    evaluate = engine.llama.eval

    def spied(tokens: list[int]) -> None:
        evaluated.append(list(tokens))
        evaluate(tokens)

    monkeypatch.setattr(engine.llama, "eval", spied)
    return evaluated


def test_a_text_the_grammar_allows_alone_costs_no_step(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the first token is the model's choice: the rest of this answer is forced, and so is
    its end, so after the prompt nothing is evaluated."""
    schema = {"type": "object", "properties": {"kind": {"enum": ["weather report"]}, "unit": {"const": "celsius"}},
              "required": ["kind", "unit"], "additionalProperties": False}
    evaluated = evaluations(engine, monkeypatch)
    prompt = chat(engine, "What kind of report is it?")
    engine.llama.reset()
    gen = engine.generate(prompt, 100, SamplingParams(temperature=0.7, seed=3, json_schema=schema), lambda text, n: None,
                          threading.Event(), time.monotonic() + 60)
    assert (gen.text, gen.finish_reason) == ('{"kind": "weather report", "unit": "celsius"}', "stop")
    assert evaluated == [prompt]
    assert engine.llama.detokenize(gen.tokens).decode() == gen.text


def test_forced_texts_are_evaluated_with_the_chosen_token(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool call: fewer evaluations than tokens; with a logit bias (which turns forcing off:
    it could ban a token the forced text is written with) one per token."""
    tools = ChatCompletionRequest.model_validate({"model": "", "messages": [{"role": "user", "content": "hi"}],
                                                   "tools": TOOLS, "tool_choice": "required"}).tool_use()
    assert tools is not None
    evaluated = evaluations(engine, monkeypatch)
    for bias in ({}, {0: 0.0}):
        evaluated.clear()
        engine.llama.reset()
        gen = engine.generate(chat(engine, "What is the weather in Oslo?"), 120, SamplingParams(temperature=0.0, logit_bias=bias),
                              lambda text, n: None, threading.Event(), time.monotonic() + 60, tools=tools)
        call = json.loads(gen.text.removeprefix("<tool_call>\n").split("\n</tool_call>")[0])
        assert call["name"] in {t["function"]["name"] for t in TOOLS}
        assert gen.finish_reason == "stop"
        if bias:
            assert [len(batch) for batch in evaluated[1:]] == [1] * gen.completion_tokens
        else:
            assert 1 < len(evaluated) < gen.completion_tokens / 2
            assert max(len(batch) for batch in evaluated[1:]) > 5  # `", "arguments": {"` and the like, in one batch


def grammar_accepts(fb: VocabIndex, vocab: Any, gbnf: str, text: str) -> bool:
    """Whether the grammar takes `text`, character by character, and may end after it."""
    grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    tokens = {char: token for token, char in fb.char_of.items()}
    try:
        for char in text.encode():
            block = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(tokens[char], 0.0, 0.0))
            llama_cpp.llama_sampler_apply(grammar, ctypes.byref(llama_cpp.llama_token_data_array(data=block, size=1, selected=-1, sorted=False)))
            if np.isinf(block[0].logit):
                return False
            llama_cpp.llama_sampler_accept(grammar, tokens[char])
        eog = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(min(fb.eog), 0.0, 0.0))
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(llama_cpp.llama_token_data_array(data=eog, size=1, selected=-1, sorted=False)))
        return not np.isinf(eog[0].logit)
    finally:
        llama_cpp.llama_sampler_free(grammar)


def test_json_is_laid_out_as_json_dumps_writes_it(engine: Engine) -> None:
    vocab = engine.llama._model.vocab
    fb = VocabIndex(vocab, engine.n_vocab)
    gbnf = to_gbnf({**SCHEMA, "properties": {**SCHEMA["properties"], "more": {"type": "object", "additionalProperties": {"type": "number"}}}})
    value = {"name": "Ada, Lovelace: \"x\"", "age": 36, "tags": ["a", "b"], "more": {"k": 1.5, "j": -2}}
    assert grammar_accepts(fb, vocab, gbnf, json.dumps(value))
    assert grammar_accepts(fb, vocab, gbnf, json.dumps({**value, "tags": [], "more": {}}))
    for other in (json.dumps(value, separators=(",", ":")), json.dumps(value, indent=1), json.dumps(value) + " ",
                  json.dumps(value).replace("{", "{ ", 1), json.dumps(value).replace("36, ", "36 , ")):
        assert not grammar_accepts(fb, vocab, gbnf, other), other


def piece(llama: Any, token: int) -> bytes:
    """A token's text as the grammar reads it (no space dropped before a first one)."""
    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(llama._model.vocab, token, buf, len(buf), 0, True)
    return buf.raw[:n]


@pytest.mark.parametrize("kind", ["smollm2", "sentencepiece"])
def test_a_forced_text_is_spelt_exactly(kind: str, tmp_path: Path) -> None:
    """With the tokenizer's own tokens, as it writes the text within a longer one: byte-level
    BPE writes it alone so; SentencePiece puts a space before any text it is given, and writes
    the text so after a line break. Its merges, not the longest pieces: of `abc`, `bcd` and
    `cd`, it writes `abcd` as `a` `bcd` (merging `cd` first), never `abc` `d`."""
    if kind == "sentencepiece":
        vocab = sentencepiece_vocab(tmp_path / "vocab.gguf", extra=["abc", "bcd", "cd"])
        path = write_shaped_gguf(tmp_path / "mistral.gguf", "mistral-tiny", tokenizer_from=vocab)
    else:
        (model,) = catalog(WorkerSettings()).values()
        path = model.path
    llama = load_vocab(str(path))
    fb = VocabIndex(llama._model.vocab, llama.n_vocab())
    for text in ('", "arguments": {"name": "', '"}}\n</tool_call>', " json", "[/INST] </s>", "{abcd}"):
        tokens = fb.tokens(text.encode())
        assert b"".join(piece(llama, token) for token in tokens) == text.encode()
        assert len(tokens) < len(text)
        own = llama.tokenize(text.encode(), add_bos=False)
        if kind == "smollm2":
            assert tokens == own
        else:
            assert b"".join(piece(llama, token) for token in own) == b" " + text.encode()  # why not its own
            assert tokens == llama.tokenize(b"\n" + text.encode(), add_bos=False)[2:]  # after `▁` and the line break
    if kind == "sentencepiece":
        assert [piece(llama, token) for token in fb.tokens(b"{abcd}")] == [b"{", b"a", b"bcd", b"}"]
