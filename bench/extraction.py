"""`documents`, extraction: pages of text read per second from PDFs uploaded through the stack
(`files.create(purpose="user_data")`: the upload, its bounded reader process, storing bytes and
text), beside pypdf reading the same file in-process, so the cost of the bounds shows."""

import logging
import time
from dataclasses import dataclass

import openai

from api.documents.formats import extract
from bench.report import median, table
from bench.rig import Rig
from tools.sample_documents import long_pdf

log = logging.getLogger(__name__)

BENCH_USER = "bench-extraction"
PAGES = 200


@dataclass(frozen=True)
class ExtractionResult:
    pages: int
    file_bytes: int
    rounds: int
    local_s: list[float]
    stack_s: list[float]

    def render(self) -> str:
        def row(name: str, runs: list[float]) -> list[object]:
            return [name, f"{self.pages / median(runs):.0f}", " ".join(f"{self.pages / s:.0f}" for s in runs)]

        return table(
            f"documents, extraction: a {self.pages}-page text PDF ({self.file_bytes // 1024} kB); medians of {self.rounds} rounds",
            ["side", "pages/s", "pages/s per round"],
            [row("in-process (pypdf)", self.local_s), row("stack (files.create user_data)", self.stack_s)],
            ["the stack's side includes the upload, the bounded reader process's start, and storing bytes and text"],
        )


def run(rig: Rig, rounds: int) -> ExtractionResult:
    data = long_pdf(PAGES)
    key = rig.api_keys([BENCH_USER])[BENCH_USER]
    client = openai.OpenAI(base_url=rig.base_url, api_key=key, max_retries=0, timeout=600)
    local_s: list[float] = []
    stack_s: list[float] = []
    try:
        for r in range(rounds):
            log.info("documents: extraction round %d of %d", r + 1, rounds)
            start = time.perf_counter()
            extract("bench.pdf", data, PAGES, 10**7)
            local_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            f = client.files.create(file=("bench.pdf", data), purpose="user_data")
            stack_s.append(time.perf_counter() - start)
            client.files.delete(f.id)
    finally:
        client.close()
    return ExtractionResult(PAGES, len(data), rounds, local_s, stack_s)
