"""Long documents' chunks and their BM25 terms, made once per document and kept for the
questions that follow: cutting a 200-page document and counting its terms takes a few tenths of
a second, which every question about it would otherwise pay again (worker.documents). Shared by
the job thread and the fit-check thread; the least recently asked go first past the bound."""

import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hearth.documents import DocumentText
from worker.documents import DEFAULT_CHUNKING, Chunk, Chunking, chunks, counted, ranked

BYTES_PER_CHAR = 25  # what one character of text costs kept: its chunks, and its terms' counts (measured: 22)


@dataclass(frozen=True)
class Indexed:
    chunks: list[Chunk]
    counts: list[Counter[str]]  # each chunk's terms (worker.documents.counted)
    cost: int  # bytes, estimated


class DocumentIndex:
    def __init__(self, chunking: Chunking = DEFAULT_CHUNKING, capacity_bytes: int = 256 * 2**20, retrieval_tokens: int = 0):
        self.chunking, self._capacity = chunking, capacity_bytes
        self._retrieval_tokens = retrieval_tokens  # the best chunks' estimated tokens a question gets at most (0: no bound)
        self._kept: OrderedDict[tuple[str, int], Indexed] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def get(self, document: DocumentText) -> Indexed:
        # By id and content: an id names one text in Hearth, not in every caller's hands.
        key = (document.document_id, hash(tuple(page.text for page in document.pages)))
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                return kept
        parts = chunks(document, self.chunking)
        made = Indexed(parts, [counted(p) for p in parts], BYTES_PER_CHAR * sum(len(p.text) for p in document.pages))
        with self._lock:
            self._kept[key] = made
            while len(self._kept) > 1 and sum(i.cost for i in self._kept.values()) > self._capacity:
                self._kept.popitem(last=False)
        return made

    def ranked(self, documents: Sequence[DocumentText], question: str, similarity: Mapping[str, np.ndarray] | None = None) -> list[Chunk]:
        """The chunks of `documents` best first for `question` (worker.documents.ranked), as many
        as the retrieval bound allows (at least one). A document's `similarity` holds the cosine
        of its first chunks' vectors to the question's (those the embedding job has made); its
        other chunks, and every chunk of a document without one, are ranked by BM25 alone."""
        got = [self.get(d) for d in documents]
        near: list[float | None] = []
        for document, indexed in zip(documents, got):
            cosines = [float(c) for c in (similarity or {}).get(document.document_id, np.empty(0))[:len(indexed.chunks)]]
            near += [*cosines, *[None] * (len(indexed.chunks) - len(cosines))]
        best = ranked([c for i in got for c in i.chunks], question, [n for i in got for n in i.counts], near)
        if not self._retrieval_tokens:
            return best
        taken, tokens = 0, 0
        while taken < len(best) and (not taken or tokens + best[taken].tokens <= self._retrieval_tokens):
            tokens += best[taken].tokens
            taken += 1
        return best[:taken]
