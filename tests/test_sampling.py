"""worker.sampling's refusal path asks the grammar about the tokens whose first character it
takes, not the vocabulary: on the real SmolLM2, under a JSON schema's grammar and a tool-call
grammar, it picks exactly the tokens the full grammar match picks, greedy and seeded."""

from typing import Any

import numpy as np
import pytest
from llama_cpp import LlamaGrammar

from api.chat.schemas import ChatCompletionRequest
from bench.tool_calls import TOOLS
from worker.engine import Engine
from worker.models import catalog
from worker.sampling import GrammarChecked
from worker.settings import WorkerSettings

SCHEMA = {"type": "object", "properties": {
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
