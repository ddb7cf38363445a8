"""A long document's parts and which of them answer a question: chunks that keep their page
(and heading), ranked by BM25 (Okapi) for the question's words.

Pure functions of the text and a token counter: the prompt's composer (worker.documents_prompt)
and the bench's retrieval case call the same code.
"""

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from hearth.documents import DocumentText

Count = Callable[[str], int]  # a text's tokens in the model's tokenizer

_WORD = re.compile(r"\w+")
_PIECE = re.compile(r"\S+\s*")  # a word and the space after it: joined back, the text as it was


@dataclass(frozen=True)
class Chunking:
    """Chunk sizes in the model's tokens: each chunk about `tokens` long, repeating the last
    `overlap` tokens of the one before it (a fact cut in two is whole in one of them)."""

    tokens: int = 256
    overlap: int = 32


DEFAULT_CHUNKING = Chunking()


@dataclass(frozen=True)
class Chunk:
    document_id: str
    filename: str
    number: int  # its place in its document, from 0
    page: int
    heading: str | None
    text: str
    tokens: int


def chunks(document: DocumentText, count: Count, chunking: Chunking = DEFAULT_CHUNKING) -> list[Chunk]:
    """`document` cut into chunks that never cross a page, so each has one page number. A page
    is cut by words, about `chunking.tokens` each by the page's own tokens per word (a chunk's
    `tokens` is that estimate: counting each chunk would double the cost)."""
    out: list[Chunk] = []
    for page in document.pages:
        pieces = _PIECE.findall(page.text)
        if not pieces:
            continue
        per_piece = max(count(page.text), 1) / len(pieces)
        size = max(int(chunking.tokens / per_piece), 1)
        step = max(size - int(chunking.overlap / per_piece), 1)
        start = 0
        while True:
            text = "".join(pieces[start:start + size]).strip()
            tokens = round(min(size, len(pieces) - start) * per_piece)
            out.append(Chunk(document.document_id, document.filename, len(out), page.number, page.heading, text, tokens))
            if start + size >= len(pieces):
                break
            start += step
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


class BM25:
    """Okapi BM25 over a fixed set of texts (k1 1.2, b 0.75, the non-negative idf)."""

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75):
        self._counts = [Counter(terms(t)) for t in texts]
        self._lengths = [sum(c.values()) for c in self._counts]
        self._average = sum(self._lengths) / len(texts) if texts else 0.0
        holding = Counter(term for c in self._counts for term in c)
        n = len(texts)
        self._idf = {term: math.log(1 + (n - k + 0.5) / (k + 0.5)) for term, k in holding.items()}
        self._k1, self._b = k1, b

    def scores(self, query: str) -> list[float]:
        wanted = [t for t in set(terms(query)) if t in self._idf]
        out = []
        for counts, length in zip(self._counts, self._lengths):
            norm = self._k1 * (1 - self._b + self._b * length / self._average) if self._average else self._k1
            out.append(sum(self._idf[t] * counts[t] * (self._k1 + 1) / (counts[t] + norm) for t in wanted if t in counts))
        return out


def ranked(parts: Sequence[Chunk], question: str) -> list[Chunk]:
    """`parts` best first for `question`; ties (a question with no word in them) in document order."""
    scores = BM25([f"{p.heading or ''} {p.text}" for p in parts]).scores(question)
    return [parts[i] for i in sorted(range(len(parts)), key=lambda i: -scores[i])]
