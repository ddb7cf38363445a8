"""`tools`: function calls generated in-process (as `grammar` does), `--tool-requests` of
them across a few functions: how many have arguments that parse and validate against their
function's parameters (goal 100 %), and their tokens/s against the same request without tools
generating as many tokens of free text (goal >= 0.9x: the grammar's cost). `--shaped` runs
it on a random-weight model (Mistral's template), whose calls only the grammar makes valid.
One call an answer (`parallel_tool_calls` false), with room for the longest the schemas
allow: a random-weight model would otherwise call until `max_tokens` cut its last call (3 %
of 200 requests on `mistral-tiny` with 120 tokens and parallel calls).
"""

import json
import logging
from dataclasses import dataclass
from typing import Any

import jsonschema

from bench.report import median, table, verdict
from bench.rig import Rig
from bench.stream import Run, in_process, request_body
from hearth.contract import ToolCallEvent
from worker.tool_calls import CallParser, Dialect

log = logging.getLogger(__name__)

RATIO_TARGET = 0.9
# More than the longest call below can take, a token a character (about 730: strings at their
# maxLength in `\uXXXX` escapes, numbers of 16 digits each side of the point): none is cut.
MAX_TOKENS = 768
CITY = {"type": "string", "maxLength": 30}
FUNCTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("Switch off the kitchen light.", "set_light", {
        "type": "object", "properties": {"room": {"enum": ["kitchen", "hall", "bedroom"]}, "on": {"type": "boolean"},
                                         "brightness": {"type": "integer"}},
        "required": ["room", "on"], "additionalProperties": False}),
    ("What is the weather in Oslo?", "get_weather", {
        "type": "object", "properties": {"city": CITY, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}),
    ("Remind me to buy milk tomorrow.", "add_reminder", {
        "type": "object", "properties": {"text": {"type": "string", "maxLength": 60}, "date": {"type": "string", "format": "date"},
                                         "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}},
        "required": ["text", "date"], "additionalProperties": False}),
    ("Play some jazz in the living room.", "play_music", {
        "type": "object", "properties": {"genre": {"type": "string", "maxLength": 20}, "volume": {"type": "number"},
                                         "speakers": {"type": "array", "items": CITY, "minItems": 1, "maxItems": 2}},
        "required": ["genre", "speakers"], "additionalProperties": False}),
]
TOOLS = [{"type": "function", "function": {"name": name, "parameters": schema}} for _, name, schema in FUNCTIONS]


@dataclass(frozen=True)
class ToolsResult:
    requests: int
    valid: int
    calls: int
    tools: list[Run]
    free: list[Run]

    @property
    def ratio(self) -> float:
        return median([t.decode_tps / f.decode_tps for t, f in zip(self.tools, self.free)])

    def render(self) -> str:
        def row(name: str, runs: list[Run]) -> list[object]:
            return [name, f"{median([r.decode_tps for r in runs]):.1f}", f"{1000 * median([r.ttft_s for r in runs]):.1f}",
                    f"{median([r.completion_tokens for r in runs]):.0f}"]

        share = 100 * self.valid / self.requests
        return table(
            f"tools: {self.requests} tool-call requests in-process ({len(FUNCTIONS)} functions, tool_choice required, one call each) "
            "vs the same requests without tools, as many tokens of free text; medians",
            ["side", "tok/s", "TTFT ms", "tokens"],
            [row("tools", self.tools), row("free text", self.free)],
            [f"valid arguments: {share:.1f} % ({self.valid}/{self.requests} requests, {self.calls} calls)   target 100 %   "
             f"{verdict(self.valid == self.requests)}",
             f"ratio tools/free tok/s: {self.ratio:.3f}   target >= {RATIO_TARGET}   {verdict(self.ratio >= RATIO_TARGET)}"],
        )


def _valid(text: str, schemas: dict[str, dict[str, Any]], dialect: Dialect) -> int | None:
    """How many calls `text` (in `dialect`) holds, if it holds at least one and each is valid; else None."""
    parser = CallParser("bench", dialect)
    calls: dict[int, list[str]] = {}
    for event in parser.feed(text, 0):
        if isinstance(event, ToolCallEvent):
            calls.setdefault(event.index, [event.name or "", ""])[1] += event.arguments
    try:
        for name, arguments in calls.values():
            jsonschema.validate(json.loads(arguments), schemas[name])
    except (ValueError, KeyError, jsonschema.ValidationError):
        return None
    return len(calls) or None


def run(rig: Rig, requests: int, seed: int) -> ToolsResult:
    schemas = {name: schema for _, name, schema in FUNCTIONS}
    base = request_body(rig, MAX_TOKENS, seed)
    base.pop("logit_bias")  # a call must be able to end
    sides: dict[str, list[Run]] = {"tools": [], "free": []}
    valid = calls = 0
    for i in range(requests + 1):  # the first: warm-up (the grammars are built)
        prompt = FUNCTIONS[i % len(FUNCTIONS)][0]
        with_tools = {**base, "seed": seed + i, "messages": [{"role": "user", "content": prompt}], "tools": TOOLS, "tool_choice": "required",
                      "parallel_tool_calls": False}
        called = in_process(rig, with_tools)
        # The same request without tools, as many tokens (end of generation banned).
        free = in_process(rig, {**request_body(rig, max(called.completion_tokens, 2), seed + i), "messages": with_tools["messages"]})
        if i == 0:
            continue
        log.info("tools: request %d/%d", i, requests)
        sides["tools"].append(called)
        sides["free"].append(free)
        made = _valid(called.text, schemas, rig.engine.prompter.template.dialect)
        valid += made is not None
        calls += made or 0
    return ToolsResult(requests, valid, calls, sides["tools"], sides["free"])
