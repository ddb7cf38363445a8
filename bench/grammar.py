"""`grammar`: what a `response_format` JSON schema costs the model. The same chat generated
in-process (as `stream` does it, through `worker.engine.Engine`) as free text and under a
schema's grammar (checked against the sampled token first: worker.sampling).

The schema asks for a hundred records, far more than the bench's token count, so both sides
generate exactly `tokens` tokens (end of generation is banned, and the grammar could not end
earlier anyway). The sides alternate, order flipped each round, after one warm-up each (the
worker's grammar cache builds the grammar in the warm-up, as it would for a schema's first
request).
"""

import logging
from dataclasses import dataclass
from typing import Any

from bench.report import median, table
from bench.rig import Rig
from bench.stream import Run, in_process, request_body

log = logging.getLogger(__name__)

RECORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
}
SCHEMA = {"type": "object", "properties": {"people": {"type": "array", "items": RECORD, "minItems": 100}}, "required": ["people"]}


@dataclass(frozen=True)
class GrammarResult:
    tokens: int
    rounds: int
    free: list[Run]
    structured: list[Run]

    @property
    def ratios(self) -> list[float]:
        return [s.decode_tps / f.decode_tps for s, f in zip(self.structured, self.free)]

    def render(self) -> str:
        def row(name: str, runs: list[Run]) -> list[object]:
            return [name, f"{median([r.decode_tps for r in runs]):.1f}", f"{1000 * median([r.ttft_s for r in runs]):.1f}",
                    f"{runs[-1].completion_tokens}", " ".join(f"{r.decode_tps:.0f}" for r in runs)]

        ttft_ms = median([1000 * (s.ttft_s - f.ttft_s) for s, f in zip(self.structured, self.free)])
        return table(
            f"grammar: {self.tokens} tokens in-process, free text vs a json_schema's grammar; medians of "
            f"{self.rounds} rounds after a warm-up",
            ["side", "tok/s", "TTFT ms", "tokens", "tok/s per round"],
            [row("free text", self.free), row("json_schema", self.structured)],
            [f"ratio json_schema/free tok/s: {median(self.ratios):.3f}   "
             f"(per round: {' '.join(f'{r:.2f}' for r in self.ratios)}); TTFT difference {ttft_ms:.1f} ms"],
        )


def run(rig: Rig, rounds: int, tokens: int, seed: int) -> GrammarResult:
    free = request_body(rig, tokens, seed)
    structured: dict[str, Any] = {**free, "response_format": {
        "type": "json_schema", "json_schema": {"name": "people", "schema": SCHEMA}}}
    log.info("grammar: warm-up")
    in_process(rig, free)
    in_process(rig, structured)
    sides: dict[str, list[Run]] = {"free": [], "structured": []}
    for i in range(rounds):
        log.info("grammar: round %d/%d", i + 1, rounds)
        for name, body in (("free", free), ("structured", structured))[:: -1 if i % 2 else 1]:
            sides[name].append(in_process(rig, body))
    return GrammarResult(tokens, rounds, sides["free"], sides["structured"])
