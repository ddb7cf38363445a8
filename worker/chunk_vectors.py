"""Documents' chunk vectors (hearth.documents.chunk_vectors_key): kept by the embedding job
the api queues after an upload, read by chats to rank the chunks by their cosine to the
question's vector (DocumentIndex.ranked).

Vectors count only for the model, the chunks and the chunk prefix they were made with
(ChunkVectors): a worker whose settings differ ranks that document by BM25 alone. Models
trained for retrieval embed a question and a passage each after a task prefix of their own
(`TaskPrefixes`); without it they rank worse.
"""

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from redis import Redis
from redis.client import Pipeline

from hearth.documents import ChunkVectors, DocumentText, chunk_vectors_key, document_key
from worker.documents import BYTES_PER_TOKEN, NO_PREFIXES, Chunking, TaskPrefixes
from worker.embedder import Embedder

log = logging.getLogger(__name__)

# KEYS: the document's text, its vectors. ARGV: ChunkVectors JSON, the byte offset the new
# vectors start at (those of an earlier attempt before it), the new vectors. Nothing is kept for
# a document deleted meanwhile, nor after an earlier attempt's vectors made otherwise (by a
# worker of other settings or version: the new ones would stand for the first chunks); what is
# kept lives as long as the text.
_KEEP_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local data = ''
if redis.call('HGET', KEYS[2], 'meta') == ARGV[1] then
  data = redis.call('HGET', KEYS[2], 'data') or ''
elseif tonumber(ARGV[2]) > 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'meta', ARGV[1], 'data', string.sub(data, 1, tonumber(ARGV[2])) .. ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) else redis.call('PERSIST', KEYS[2]) end
return 1
"""


def made_with(model: str, chunking: Chunking, dimensions: int, chunk_prefix: str = "") -> ChunkVectors:
    return ChunkVectors(model=model, chunk_tokens=chunking.tokens, overlap_tokens=chunking.overlap, dimensions=dimensions,
                        chunk_prefix=chunk_prefix)


def keep_vectors(pipe: Pipeline, document_id: str, meta: ChunkVectors, offset: int, vectors: bytes) -> None:
    """Adds the vectors of the document's chunks from `offset` (bytes) on, in `pipe`."""
    pipe.eval(_KEEP_LUA, 2, document_key(document_id), chunk_vectors_key(document_id), meta.model_dump_json(), offset, vectors)


class ChunkSimilarity:
    """The cosine of attached documents' chunk vectors to the question's, for a chat. Used by
    the worker's job thread (it embeds with the pool's models)."""

    def __init__(self, redis: Redis, model: str, chunking: Chunking, embedder: Callable[[str, Callable[[], None]], Embedder],
                 prefixes: TaskPrefixes = NO_PREFIXES):
        self._redis, self._model, self._chunking, self._embedder, self._prefixes = redis, model, chunking, embedder, prefixes

    def made_with(self, model: str, dimensions: int) -> ChunkVectors:
        """What vectors of a document's chunks embedded by `model` are made with here."""
        return made_with(model, self._chunking, dimensions, self._prefixes.chunk)

    def chunk_inputs(self, texts: Sequence[str]) -> list[str]:
        """What is embedded for each chunk's text."""
        return [self._prefixes.chunk + text for text in texts]

    def _vectors(self, document_ids: list[str], dimensions: int) -> dict[str, np.ndarray]:
        """Each document's kept vectors, (chunks, dimensions), where made as this worker would."""
        pipe = self._redis.pipeline(transaction=False)
        for d in document_ids:
            pipe.hmget(chunk_vectors_key(d), ["meta", "data"])
        want = self.made_with(self._model, dimensions)
        out = {}
        for d, (meta, data) in zip(document_ids, pipe.execute()):
            if meta is not None and data and ChunkVectors.model_validate_json(meta) == want:
                out[d] = np.frombuffer(data, dtype="<f4").reshape(-1, dimensions)
        return out

    def of(self, documents: Mapping[str, DocumentText], question: str, window: int, loading: Callable[[str], None]) -> dict[str, np.ndarray]:
        """By document id, the cosines of its first chunks (those with vectors) to `question`
        (`loading(model)` is called before the embedding model is loaded); nothing when
        DOCUMENT_EMBEDDING_MODEL is off or no document has vectors, nor when the documents take
        less than half a `window`-token prompt by their estimate: they nearly always go whole, and
        if a long conversation leaves them less room, BM25 alone ranks their chunks. Nothing
        either when the embedding model cannot be loaded or run (logged): BM25 alone ranks them."""
        if not self._model or sum(len(p.text.encode()) for d in documents.values() for p in d.pages) < window // 2 * BYTES_PER_TOKEN:
            return {}
        model = self._model
        try:
            embedder = self._embedder(model, lambda: loading(model))
            vectors = self._vectors(list(documents), embedder.spec.dimensions)
            if not vectors:
                return {}
            [tokens] = embedder.tokens([self._prefixes.query + question], None, truncate=True)
            asked = embedder.embed([tokens])[0]
        except (ValueError, RuntimeError, MemoryError) as exc:  # llama.cpp could not load or run it: the answer does without
            log.warning("question not embedded: chunks ranked by BM25 alone", extra={"model": model, "error": type(exc).__name__})
            return {}
        return {d: v @ asked for d, v in vectors.items()}
