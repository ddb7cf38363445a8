"""Embeddings with a loaded model: its own llama.cpp context beside the model's generation
context, on the same weights.

One `Llama` cannot do both well: an embedding context pools every token of many sequences at
once (llama.cpp's `embeddings` mode, `n_seq_max` sequences in one unified KV cache), while
the generation context holds one conversation whose KV state the next turn reuses. A second
context on the same `llama_model` costs only its own KV cache (`EMBEDDING_MAX_TOKENS` tokens)
and compute buffer, never a second copy of the weights, and leaves the conversation's state as
it was. An embedding-only model (nomic-embed-text, bge...) loads its weights with no
generation context at all.

Pooling is the GGUF's (`<arch>.pooling_type`: CLS for BERT-like models, LAST for
Qwen3-Embedding...); a model whose GGUF names none, or none at all (a chat model such as
SmolLM2), is mean-pooled. Vectors are L2-normalised, as OpenAI's are.
"""

import ctypes
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp import _internals

from hearth.contract import EmbeddingModel
from worker.models import ModelFile
from worker.settings import gguf_paths

MAX_SEQUENCES = 256  # sequences in one pass: llama.cpp's own ceiling (llama_max_parallel_sequences)


class Refused(Exception):
    """A request this model cannot embed, as the api would have refused it had it known the
    model: `param` names the field."""

    def __init__(self, message: str, param: str, too_long: bool = False):
        super().__init__(message)
        self.param, self.too_long = param, too_long


class Unembeddable(Exception):
    """The GGUF cannot make one vector per input (a reranker's RANK pooling)."""


def pooling_of(file: ModelFile) -> int:
    meta = file.vocab.metadata
    pooling = int(meta.get(f"{meta.get('general.architecture', '')}.pooling_type", llama_cpp.LLAMA_POOLING_TYPE_NONE))
    if pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK:
        raise Unembeddable(f"{file.path} is a reranker (RANK pooling): it scores pairs, it makes no embeddings")
    return llama_cpp.LLAMA_POOLING_TYPE_MEAN if pooling == llama_cpp.LLAMA_POOLING_TYPE_NONE else pooling


@dataclass(frozen=True)
class EmbeddingSpec:
    """How a model embeds, read from its GGUF at start (no weights loaded)."""

    pooling: int
    dimensions: int
    max_input_tokens: int
    vocabulary: int

    @classmethod
    def of(cls, file: ModelFile, max_tokens: int) -> "EmbeddingSpec":
        meta = file.vocab.metadata
        arch = meta.get("general.architecture", "")
        trained = int(meta.get(f"{arch}.context_length", max_tokens))
        dimensions = int(meta.get(f"{arch}.embedding_length_out") or meta[f"{arch}.embedding_length"])
        return cls(pooling_of(file), dimensions, min(max_tokens, trained), file.vocab.n_vocab())

    def published(self) -> EmbeddingModel:
        return EmbeddingModel(dimensions=self.dimensions, max_input_tokens=self.max_input_tokens, vocabulary=self.vocabulary)


def tokenize(vocab: _internals.LlamaModel, text: str) -> list[int]:
    """An input's tokens as the model embeds them: with its special tokens (BOS, and the EOS
    that last-pooled models such as Qwen3-Embedding are trained with), text as plain text."""
    data = text.encode()
    size = len(data) + 8
    while True:
        buffer = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(vocab.vocab, data, len(data), buffer, size, True, False)
        if n >= 0:
            return buffer[:n]
        size = -n


def count_tokens(vocab: _internals.LlamaModel, text: str) -> int:
    return len(tokenize(vocab, text))


class Embedder:
    """One model's embedding context. Used by the worker's one job thread."""

    def __init__(self, model: _internals.LlamaModel, spec: EmbeddingSpec, n_threads: int, owns_model: bool):
        self.spec, self._model, self._owns_model = spec, model, owns_model
        n = spec.max_input_tokens
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n  # one input must fit one pass
        params.n_seq_max = min(n, MAX_SEQUENCES, llama_cpp.llama_max_parallel_sequences())
        params.kv_unified = True  # the sequences of a pass share the window
        params.embeddings = True
        params.pooling_type = spec.pooling
        params.n_threads = params.n_threads_batch = n_threads
        self._ctx = _internals.LlamaContext(model=model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=n, embd=0, n_seq_max=params.n_seq_max, verbose=False)
        self._n_seq_max = params.n_seq_max

    @classmethod
    def load(cls, file: ModelFile, spec: EmbeddingSpec, n_threads: int, n_gpu_layers: int) -> "Embedder":
        """An embedding-only model: its weights and an embedding context, nothing else."""
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if n_gpu_layers == -1 else n_gpu_layers
        model = _internals.LlamaModel(path_model=str(file.path), params=params, verbose=False)
        return cls(model, spec, n_threads, owns_model=True)

    def close(self) -> None:
        self._batch.close()
        self._ctx.close()
        if self._owns_model:
            self._model.close()

    def tokens(self, inputs: Sequence[str | list[int]], dimensions: int | None, truncate: bool = False) -> list[list[int]]:
        """Each input's tokens, refusing (Refused) what the model cannot take; with `truncate`,
        a text longer than the model embeds is cut to its first tokens instead (a document's
        chunk: its vector only ranks it)."""
        spec = self.spec
        if dimensions not in (None, spec.dimensions):
            raise Refused(f"dimensions: this model's embeddings have {spec.dimensions} dimensions, and it cannot make "
                          f"others; leave dimensions out or set it to {spec.dimensions}.", "dimensions")
        out = []
        for index, item in enumerate(inputs):
            tokens = tokenize(self._model, item) if isinstance(item, str) else item
            if truncate:
                tokens = tokens[:spec.max_input_tokens]
            if len(tokens) > spec.max_input_tokens:
                raise Refused(f"input[{index}] has {len(tokens)} tokens; this model embeds at most {spec.max_input_tokens} "
                              "tokens per input.", f"input.{index}", too_long=True)
            if any(t >= spec.vocabulary for t in tokens):
                raise Refused(f"input[{index}]: a token id is outside the model's vocabulary of {spec.vocabulary} tokens.",
                              f"input.{index}")
            out.append(tokens)
        return out

    def passes(self, inputs: list[list[int]]) -> Iterator[list[list[int]]]:
        """The inputs in runs that fill one pass each: in order, as many as fit."""
        run: list[list[int]] = []
        used = 0
        for tokens in inputs:
            if run and (used + len(tokens) > self.spec.max_input_tokens or len(run) >= self._n_seq_max):
                yield run
                run, used = [], 0
            run.append(tokens)
            used += len(tokens)
        if run:
            yield run

    def embed(self, run: list[list[int]]) -> np.ndarray:
        """One pass of the model over a run from `passes`: an (inputs, dimensions) float32
        array of unit vectors."""
        batch = self._batch
        batch.reset()
        for seq, tokens in enumerate(run):
            batch.add_sequence(tokens, seq, True)  # pooling reads every token's output
        self._ctx.kv_cache_clear()
        self._ctx.decode(batch)
        dims = self.spec.dimensions
        out = np.empty((len(run), dims), dtype=np.float32)
        for seq in range(len(run)):
            pointer = llama_cpp.llama_get_embeddings_seq(self._ctx.ctx, seq)
            out[seq] = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(dims,))
        batch.reset()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)


def embedding_catalog(embedding_models: str, max_tokens: int, chat: dict[str, ModelFile]) -> dict[str, tuple[ModelFile, EmbeddingSpec]]:
    """The models a worker embeds with, by id: the files `embedding_models` names (a chat
    model's file among them embeds with its chat weights), or with none named, its chat models."""
    by_path = {file.path.resolve(): file for file in chat.values()}
    files = [by_path.get(path.resolve()) or ModelFile.read(path, "", max_tokens) for path in gguf_paths(embedding_models)] \
        if embedding_models else list(chat.values())
    out: dict[str, tuple[ModelFile, EmbeddingSpec]] = {}
    for file in files:
        taken = out.get(file.id, (None,))[0] or (chat.get(file.id) if file.path.resolve() not in by_path else None)
        if taken is not None:
            raise ValueError(f"two model files are named {file.id!r}: {taken.path} and {file.path}")
        out[file.id] = (file, EmbeddingSpec.of(file, max_tokens))
    return out
