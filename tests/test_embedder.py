"""The worker's embedding contexts on real GGUF files: pooling read from the GGUF (a
Qwen3-Embedding-like decoder says LAST), mean for a model that names none, a reranker refused.
The models are tools/shaped_gguf.py's tiny Mistral layout with random weights."""

from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from tools.shaped_gguf import write_shaped_gguf
from worker.embedder import Embedder, EmbeddingSpec, Unembeddable, embedding_catalog
from worker.models import ModelFile


def shaped(tmp_path: Path, name: str, pooling: gguf.PoolingType | None) -> ModelFile:
    return ModelFile.read(write_shaped_gguf(tmp_path / f"{name}.gguf", "mistral-tiny", pooling=pooling), "", 256)


def test_pooling_is_read_from_the_gguf_and_the_context_uses_it(tmp_path: Path) -> None:
    last = shaped(tmp_path, "last", gguf.PoolingType.LAST)
    spec = EmbeddingSpec.of(last, 128)
    assert spec.pooling == llama_cpp.LLAMA_POOLING_TYPE_LAST and spec.max_input_tokens == 128 and spec.dimensions > 0
    embedder = Embedder.load(last, spec, n_threads=1, n_gpu_layers=0)
    try:
        assert embedder._ctx.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_LAST
        tokens = embedder.tokens(["one text", "another text", "one text"], None)
        vectors = np.concatenate([embedder.embed(run) for run in embedder.passes(tokens)])
        assert vectors.shape == (3, spec.dimensions) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert np.array_equal(vectors[0], vectors[2]) and not np.array_equal(vectors[0], vectors[1])  # random weights: no meaning
    finally:
        embedder.close()
    assert EmbeddingSpec.of(shaped(tmp_path, "none", None), 128).pooling == llama_cpp.LLAMA_POOLING_TYPE_MEAN


def test_a_reranker_is_refused_at_start(tmp_path: Path) -> None:
    rank = tmp_path / "rank.gguf"
    write_shaped_gguf(rank, "mistral-tiny", pooling=gguf.PoolingType.RANK)
    with pytest.raises(Unembeddable, match="reranker"):
        embedding_catalog(str(rank), 128, {})
