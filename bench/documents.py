"""`documents`: `/v1/embeddings` through the stack (the official client, base64 as it asks by
default) against llama-cpp-python's own `Llama.embed` in-process on the same model, with the
same pooling, threads and batch (`EMBEDDING_MAX_TOKENS`), normalised as Hearth's vectors are.

Both embed the same generated texts, all in one request / one `embed` call, so both pack them
into as few passes of the model as fit. The sides alternate, order flipped each round, after a
warm-up each (the worker makes its embedding context at its first embedding job).
"""

import logging
import random
import time
from dataclasses import dataclass

import numpy as np
import openai
from llama_cpp import Llama

from bench.report import median, table, verdict
from bench.rig import Rig
from worker.embedder import EmbeddingSpec
from worker.models import catalog

log = logging.getLogger(__name__)

TARGET = 0.95  # stack inputs/s over in-process inputs/s
BENCH_USER = "bench-documents"
WORDS = ["lease", "tenant", "landlord", "deposit", "notice", "repair", "garden", "heating", "window", "contract", "month", "rent", "pets", "keys", "boiler", "insurance", "meter", "inventory", "clause", "signature"]


def texts(count: int, seed: int) -> list[str]:
    """Sentences of 15 to 40 words, as a document's chunks might be (shorter, to keep the bench short)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40))) + "." for _ in range(count)]


@dataclass(frozen=True)
class DocumentsResult:
    inputs: int
    tokens: int
    rounds: int
    local_s: list[float]
    stack_s: list[float]
    agree: float  # the least cosine between a stack vector and its in-process twin

    def render(self) -> str:
        local, stack = median(self.local_s), median(self.stack_s)
        ratio = local / stack if stack else float("nan")

        def row(name: str, runs: list[float]) -> list[object]:
            return [name, f"{self.inputs / median(runs):.2f}", f"{self.tokens / median(runs):.0f}", " ".join(f"{self.inputs / s:.2f}" for s in runs)]

        return table(
            f"documents: {self.inputs} inputs ({self.tokens} tokens) embedded in one call; medians of {self.rounds} rounds after a warm-up",
            ["side", "inputs/s", "tokens/s", "inputs/s per round"],
            [row("in-process (Llama.embed)", self.local_s), row("stack (/v1/embeddings)", self.stack_s)],
            [f"ratio stack/in-process inputs/s: {ratio:.3f}   target >= {TARGET:.2f}  {verdict(ratio >= TARGET)}",
             f"least cosine between the two sides' vectors: {self.agree:.5f}"],
        )


def in_process(rig: Rig) -> Llama:
    """llama-cpp-python's own embedding model, set up as the worker's embedding context is."""
    s = rig.settings
    (model,) = catalog(s).values()
    spec = EmbeddingSpec.of(model, s.embedding_max_tokens)
    n = spec.max_input_tokens
    return Llama(model_path=str(model.path), embedding=True, pooling_type=spec.pooling, n_ctx=n, n_batch=n, n_ubatch=n,
                 n_threads=s.n_threads, n_threads_batch=s.n_threads, n_gpu_layers=s.n_gpu_layers, verbose=False)


def run(rig: Rig, inputs: int, rounds: int, seed: int) -> DocumentsResult:
    chunks = texts(inputs, seed)
    key = rig.api_keys([BENCH_USER])[BENCH_USER]
    client = openai.OpenAI(base_url=rig.base_url, api_key=key, max_retries=0, timeout=600)
    local_model = in_process(rig)
    model = next(m.id for m in client.models.list().data)
    try:
        def local() -> tuple[float, np.ndarray]:
            start = time.perf_counter()
            out = local_model.embed(chunks, normalize=True)
            return time.perf_counter() - start, np.array(out)

        def stack() -> tuple[float, np.ndarray]:
            start = time.perf_counter()
            out = client.embeddings.create(model=model, input=chunks)
            return time.perf_counter() - start, np.array([d.embedding for d in out.data])

        log.info("documents: warm-up")
        _, local_vectors = local()
        _, stack_vectors = stack()
        tokens = sum(len(local_model.tokenize(c.encode())) for c in chunks)
        local_s: list[float] = []
        stack_s: list[float] = []
        for r in range(rounds):
            log.info("documents: round %d of %d", r + 1, rounds)
            for side in ((local, stack) if r % 2 == 0 else (stack, local)):
                seconds, _ = side()
                (local_s if side is local else stack_s).append(seconds)
                rig.settle()
    finally:
        client.close()
        local_model.close()
    agree = float(np.min(np.sum(local_vectors * stack_vectors, axis=1)))
    return DocumentsResult(inputs, tokens, rounds, local_s, stack_s, agree)

