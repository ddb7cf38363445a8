"""`documents` (retrieval part): how often the chunk that answers a question is among the five
ranked first, with lexical ranking alone (worker.documents: BM25), on generated documents with
one needed fact each (a "needle": an access code) among decoys of the same shape; then, on
fewer and shorter documents (embedding every chunk takes a while on a CPU), with BM25 fused
with the cosine of chunk vectors made by the first model the worker embeds with, as a worker
with DOCUMENT_EMBEDDING_MODEL ranks them, beside BM25 alone on the same documents.

Each question gets its own document of `pages` pages of lease-like sentences that keep naming
the same things, holding its needle on one page and `DECOYS` other codes on others; the question
names only the needle's thing. A question is hit when a chunk holding the whole needle is in
the top `TOP`. Chunks are cut with the worker's chunk settings, as the worker cuts them.
"""

import logging
import random
import time
from dataclasses import dataclass

import numpy as np

from bench.report import median, table, verdict
from bench.rig import Rig
from hearth.documents import DocumentPage, DocumentText
from worker.documents import chunks, ranked
from worker.embedder import Embedder, embedding_catalog
from worker.models import catalog

log = logging.getLogger(__name__)

TARGET = 0.95
TOP = 5
DECOYS = 10
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "grey", "orange", "purple", "brown", "silver", "golden"]
THINGS = ["locker", "cabinet", "gate", "safe", "shed", "mailbox", "garage", "storeroom", "cellar", "attic"]
SUBJECTS = ["The tenant", "The landlord", "The agent", "Each household", "The contractor", "The council", "The caretaker", "The guarantor"]
VERBS = ["shall inspect", "must repair", "may review", "will replace", "agrees to clean", "is responsible for", "should report on", "may not alter"]
OBJECTS = ["the boiler", "the garden fence", "the heating system", "the windows", "the shared hallway", "the smoke alarms", "the water meter",
           "the front door keys", "the inventory", "the deposit", *(f"the {c} {t}" for c in COLOURS[:6] for t in THINGS[:5])]
TAILS = ["before the end of each month", "within fourteen days of notice", "at its own cost", "as the contract requires",
         "after giving written notice", "during the first year", "unless agreed otherwise in writing", "once a quarter"]


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}."


def code_sentence(colour: str, thing: str, code: int) -> str:
    return f"The access code for the {colour} {thing} is {code}."


@dataclass(frozen=True)
class Needle:
    document: DocumentText
    question: str
    fact: str
    page: int


def needle_document(rng: random.Random, pages: int, words_per_page: int = 300, document_id: str = "doc") -> Needle:
    """A document of `pages` pages with one needed fact and `DECOYS` others like it."""
    pairs = rng.sample([(c, t) for c in COLOURS for t in THINGS], DECOYS + 1)
    facts = [code_sentence(c, t, rng.randint(1000, 9999)) for c, t in pairs]
    where = rng.sample(range(1, pages + 1), len(facts))
    texts = []
    for number in range(1, pages + 1):
        words: list[str] = []
        while len(words) < words_per_page:
            words += sentence(rng).split()
        text = " ".join(words)
        if number in where:
            cut = text.index(". ", len(text) // 3) + 2  # after a sentence a third of the way in
            text = f"{text[:cut]}{facts[where.index(number)]} {text[cut:]}"
        texts.append(text)
    colour, thing = pairs[0]
    return Needle(DocumentText(document_id=document_id, filename="lease.pdf",
                               pages=[DocumentPage(number=n + 1, text=t) for n, t in enumerate(texts)]),
                  f"What is the access code for the {colour} {thing}?", facts[0], where[0])


@dataclass(frozen=True)
class HybridResult:
    model: str
    questions: int
    pages: int
    hits: int  # BM25 fused with the chunks' cosine
    lexical_hits: int  # BM25 alone, the same documents
    seconds_per_page: float  # embedding a document's chunks


@dataclass(frozen=True)
class RetrievalResult:
    questions: int
    pages: int
    chunks: int  # per document
    hits: int
    first: int  # questions whose needle ranked first
    seconds: list[float]  # chunking and ranking, per question
    hybrid: HybridResult

    def render(self) -> str:
        rate, h = self.hits / self.questions, self.hybrid
        return table(
            f"documents (retrieval): {self.questions} needle questions, each on its own {self.pages}-page document "
            f"({self.chunks} chunks); BM25 alone",
            ["measure", "value"],
            [[f"needle's chunk in the top {TOP}", f"{self.hits}/{self.questions} ({rate:.1%})"],
             ["needle's chunk first", f"{self.first}/{self.questions}"],
             ["chunk + rank one document, median", f"{median(self.seconds) * 1000:.0f} ms"],
             [f"hybrid (BM25 + {h.model} cosine, RRF) in the top {TOP}, {h.questions} questions on {h.pages}-page documents",
              f"{h.hits}/{h.questions} ({h.hits / h.questions:.1%})"],
             [f"BM25 alone on the same {h.questions} documents", f"{h.lexical_hits}/{h.questions} ({h.lexical_hits / h.questions:.1%})"],
             ["embedding a document's chunks, per page", f"{h.seconds_per_page:.2f} s"]],
            [f"hit rate in the top {TOP}: {rate:.3f}   target >= {TARGET:.2f}  {verdict(rate >= TARGET)}",
             f"hybrid hit rate in the top {TOP}: {h.hits / h.questions:.3f}"],
        )


def hybrid(rig: Rig, questions: int, pages: int, seed: int) -> HybridResult:
    """The hybrid hit rate, with the worker's own embedding code and model."""
    s = rig.settings
    model, (file, spec) = next(iter(embedding_catalog(s.embedding_models, s.embedding_max_tokens, catalog(s)).items()))
    embedder = Embedder.load(file, spec, s.n_threads, s.n_gpu_layers)
    rng = random.Random(seed + 1)
    hits = lexical = 0
    seconds = 0.0
    try:
        for q in range(questions):
            needle = needle_document(rng, pages)
            parts = chunks(needle.document, s.chunking)
            started = time.perf_counter()
            tokens = embedder.tokens([c.text for c in parts], None, truncate=True)
            vectors = np.concatenate([embedder.embed(run) for run in embedder.passes(tokens)])
            seconds += time.perf_counter() - started
            asked = embedder.embed(embedder.tokens([needle.question], None, truncate=True))[0]
            for best, counted in ((ranked(parts, needle.question, similarity=[float(c) for c in vectors @ asked])[:TOP], True),
                                  (ranked(parts, needle.question)[:TOP], False)):
                found = any(c.page == needle.page and needle.fact in c.text for c in best)
                hits, lexical = (hits + found, lexical) if counted else (hits, lexical + found)
            log.info("documents (retrieval): hybrid question %d of %d", q + 1, questions)
    finally:
        embedder.close()
    return HybridResult(model, questions, pages, hits, lexical, seconds / (questions * pages))


def run(rig: Rig, questions: int, pages: int, seed: int, hybrid_questions: int, hybrid_pages: int) -> RetrievalResult:
    s = rig.settings
    rng = random.Random(seed)
    hits = first = 0
    seconds: list[float] = []
    count = 0
    for q in range(questions):
        needle = needle_document(rng, pages)
        started = time.perf_counter()
        parts = chunks(needle.document, s.chunking)
        best = ranked(parts, needle.question)[:TOP]
        seconds.append(time.perf_counter() - started)
        found = [c.page == needle.page and needle.fact in c.text for c in best]
        hits += any(found)
        first += found[0]
        count = len(parts)
        log.info("documents (retrieval): question %d of %d: %s", q + 1, questions, "hit" if any(found) else "missed")
    return RetrievalResult(questions, pages, count, hits, first, seconds, hybrid(rig, hybrid_questions, hybrid_pages, seed))
