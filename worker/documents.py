"""A long document's parts and which of them answer a question: chunks that keep their page
(and heading), ranked by BM25 (Okapi) for the question's words, and, when the chunks have
vectors (hearth.documents.ChunkVectors), by their cosine to the question's vector too, the two
rankings fused by reciprocal rank.

Chunks are cut without a tokenizer, so every model reads the same chunks of a document: the
chat models that rank them and the embedding model that made their vectors. Pure functions of
the text: the prompt's composer (worker.documents_prompt), the embedding job, and the bench's
retrieval case call the same code.
"""

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from hearth.documents import DocumentText

_WORD = re.compile(r"\w+")
_PIECE = re.compile(r"\S+\s*")  # a word and the space after it: joined back, the text as it was
# A chunk's size in tokens is estimated as one per 4 bytes of UTF-8 text, whatever the model
# (English prose runs 4 to 5 bytes per token): the composer counts the parts it chooses exactly.
BYTES_PER_TOKEN = 4
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009): a place's weight is 1 / (RRF_K + place)


@dataclass(frozen=True)
class Chunking:
    """Chunk sizes in estimated tokens (BYTES_PER_TOKEN): each chunk about `tokens` long,
    repeating the last `overlap` tokens of the one before it (a fact cut in two is whole in one
    of them)."""

    tokens: int = 256
    overlap: int = 32


DEFAULT_CHUNKING = Chunking()


@dataclass(frozen=True)
class TaskPrefixes:
    """Text put before a question and before a chunk when each is embedded for ranking
    (nomic-embed-text: `search_query: ` and `search_document: `); none by default."""

    query: str = ""
    chunk: str = ""


NO_PREFIXES = TaskPrefixes()


@dataclass(frozen=True)
class Chunk:
    document_id: str
    filename: str
    number: int  # its place in its document, from 0
    page: int
    heading: str | None
    text: str
    tokens: int  # estimated (BYTES_PER_TOKEN)


def _pieces(text: str, most: int) -> list[str]:
    """`text` as words with their trailing space; a longer run without a space (text in a
    script without spaces, a long address) cut every `most` characters."""
    out: list[str] = []
    for piece in _PIECE.findall(text):
        out += [piece[i:i + most] for i in range(0, len(piece), most)] if len(piece) > most else [piece]
    return out


def chunks(document: DocumentText, chunking: Chunking = DEFAULT_CHUNKING) -> list[Chunk]:
    """`document` cut into chunks that never cross a page, so each has one page number: as many
    whole words as make `chunking.tokens`, the next starting `chunking.overlap` tokens back."""
    size, overlap = chunking.tokens * BYTES_PER_TOKEN, chunking.overlap * BYTES_PER_TOKEN
    out: list[Chunk] = []
    for page in document.pages:
        pieces = _pieces(page.text, max(size // 16, 1))  # a character takes at most 4 bytes
        lengths = [len(p.encode(errors="replace")) for p in pieces]
        start = 0
        while start < len(pieces):
            end, used = start + 1, lengths[start]
            while end < len(pieces) and used + lengths[end] <= size:
                used += lengths[end]
                end += 1
            text = "".join(pieces[start:end]).strip()
            out.append(Chunk(document.document_id, document.filename, len(out), page.number, page.heading, text,
                             math.ceil(used / BYTES_PER_TOKEN)))
            if end == len(pieces):
                break
            back, nxt = 0, end
            while nxt - 1 > start and back + lengths[nxt - 1] <= overlap:
                nxt -= 1
                back += lengths[nxt]
            start = nxt
    return out


@cache
def _term(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def terms(text: str) -> list[str]:
    """What BM25 matches: each word (lower case, a plural's `s` dropped: `pets` finds `pet`),
    and each run of two and three neighbouring words, so "code for the black gate" ranks a
    chunk that says it above one that names a black cabinet and a gate's code apart."""
    words = [_term(w) for w in _WORD.findall(text.lower())]
    return [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words)), *(f"{a} {b} {c}" for a, b, c in zip(words, words[1:], words[2:]))]


def counted(part: Chunk) -> Counter[str]:
    """What BM25 matches in a chunk: its heading's terms and its text's."""
    return Counter(terms(f"{part.heading or ''} {part.text}"))


class BM25:
    """Okapi BM25 over a fixed set of texts (k1 1.2, b 0.75, the non-negative idf), or over
    their terms already counted (`counts`)."""

    def __init__(self, texts: Sequence[str] = (), k1: float = 1.2, b: float = 0.75, counts: Sequence[Counter[str]] | None = None):
        self._counts = list(counts) if counts is not None else [Counter(terms(t)) for t in texts]
        self._lengths = [sum(c.values()) for c in self._counts]
        self._average = sum(self._lengths) / len(self._counts) if self._counts else 0.0
        self._k1, self._b = k1, b

    def scores(self, query: str) -> list[float]:
        n = len(self._counts)
        idf = {}
        for term in set(terms(query)):  # only the query's terms: counting every term's documents would cost more than ranking
            k = sum(1 for c in self._counts if term in c)
            if k:
                idf[term] = math.log(1 + (n - k + 0.5) / (k + 0.5))
        out = []
        for counts, length in zip(self._counts, self._lengths):
            norm = self._k1 * (1 - self._b + self._b * length / self._average) if self._average else self._k1
            out.append(sum(weight * counts[t] * (self._k1 + 1) / (counts[t] + norm) for t, weight in idf.items() if t in counts))
        return out


def fused(rankings: Sequence[Sequence[int]], n: int) -> list[int]:
    """Items 0..n-1 by reciprocal rank fusion of `rankings` (each some items, best first): an
    item's score is the sum of 1 / (RRF_K + its place) over the rankings that place it. Items
    no ranking places follow, in their order."""
    score = [0.0] * n
    for ranking in rankings:
        for place, item in enumerate(ranking, 1):
            score[item] += 1 / (RRF_K + place)
    return sorted(range(n), key=lambda i: -score[i])


def ranked(parts: Sequence[Chunk], question: str, counts: Sequence[Counter[str]] | None = None,
           similarity: Sequence[float | None] = ()) -> list[Chunk]:
    """`parts` best first for `question`: by BM25 (over `counts`, each part's `counted` terms,
    when the caller keeps them), fused with their `similarity` to it (each part's cosine, None
    for a part without a vector) when given. A part neither ranks (no word of the question, no
    vector) follows the rest, in document order; without similarities, the order is BM25's."""
    scores = BM25(counts=counts if counts is not None else [counted(p) for p in parts]).scores(question)
    rankings = [[i for i in sorted(range(len(parts)), key=lambda i: -scores[i]) if scores[i] > 0]]
    near = [(s, i) for i, s in enumerate(similarity) if s is not None]
    if near:
        rankings.append([i for _, i in sorted(near, key=lambda p: -p[0])])
    return [parts[i] for i in fused(rankings, len(parts))]
