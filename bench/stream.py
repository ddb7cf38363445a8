"""`stream`: one chat streamed through the whole stack vs the same generation in-process.

Both sides get one request body: the stack through the official `openai` client, the
in-process side through the api's own request model (`ChatCompletionRequest`: same messages,
same `SamplingParams`) into `worker.engine.Engine` built from the worker's settings, called
as `JobRunner.run` calls it — the code the worker runs per job (prompt plan with the GGUF
template, state cache, sampler chain, logit bias, detokenizer, stop matching), minus Redis,
RQ and HTTP. `Llama.create_chat_completion` would differ in prompt rendering and sampling,
so it would measure two implementations rather than the stack's overhead. Same seed and
state on both sides give the same text, which the table checks.

The two sides alternate (order flipped each round) after one warm-up each; while one side
runs, the other only holds memory: the worker waits on an empty queue, the in-process model
is not called.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import openai
from rq.job import Job

from api.schemas import ChatCompletionRequest
from bench.report import median, table, verdict
from bench.rig import Rig
from hearth.contract import RQ_SERIALIZER, EventType, decode_event, events_key
from hearth.redis_client import stream_entries

log = logging.getLogger(__name__)

PROMPT = "Tell me a long story about a lighthouse keeper who finds a message in a bottle."
BENCH_USER = "bench"
RATIO_TARGET = 0.95  # stack tokens/s over in-process tokens/s
TTFT_TARGET_MS = 15.0  # extra time to first token through the stack, empty queue


@dataclass(frozen=True)
class Run:
    ttft_s: float  # call → first content text
    decode_tps: float  # (tokens − 1) / (last text − first text)
    total_s: float
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int
    text: str
    cpu_s: dict[str, float]  # CPU seconds each process used for this run
    phases_ms: dict[str, float] = field(default_factory=dict)  # stack only: where TTFT went


# The stack's time to first token, cut at the timestamps Redis already holds: RQ's
# enqueued_at / started_at (µs) and the ids of the job's stream entries (ms, Redis's clock).
PHASES = {
    "api": "request sent -> RQ enqueued_at (all the api does before queueing: auth, fit check…)",
    "pickup": "enqueued_at -> started_at (worker wakes from BLPOP, RQ prepares job)",
    "model": "started_at -> first token event in Redis (template, prefill, first token)",
    "delivery": "first token in Redis -> client has it (pub/sub, SSE, openai parse)",
}


def _utc(moment: datetime | None) -> float:
    assert moment is not None
    return moment.replace(tzinfo=UTC).timestamp()


def _phases(rig: Rig, job_id: str, sent: float, first: float) -> dict[str, float]:
    """`sent` and `first` are wall-clock (time.time()) like the Redis timestamps."""
    job = Job.fetch(job_id, connection=rig.redis, serializer=RQ_SERIALIZER)
    first_token = next(int(entry_id.split(b"-")[0]) / 1000 for entry_id, fields in stream_entries(rig.redis.xrange(events_key(job_id)))
                       if decode_event(fields).type == EventType.TOKEN)
    points = [sent, _utc(job.enqueued_at), _utc(job.started_at), first_token, first]
    return {name: 1000 * (b - a) for name, a, b in zip(PHASES, points, points[1:])}


def _used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def _decode_tps(tokens: int, first: float, last: float) -> float:
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")


def request_body(rig: Rig, tokens: int, seed: int) -> dict[str, Any]:
    return {
        "model": "",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": rig.settings.temperature,
        "seed": seed,
        "logit_bias": {str(t): bias for t, bias in rig.eog_ban.items()},
    }


def in_process(rig: Rig, body: dict[str, Any]) -> Run:
    request = ChatCompletionRequest.model_validate(body)
    engine = rig.engine
    first = last = 0.0

    def on_text(_text: str, _tokens: int) -> None:
        nonlocal first, last
        last = time.perf_counter()
        first = first or last

    params = request.sampling()
    cpu = rig.cpu_seconds()
    start = time.perf_counter()
    # What worker.runner.JobRunner.run does around the model, minus its Redis events.
    fitted = engine.prompter.plan(request.contract_messages(), params.max_tokens)
    gen = engine.generate(fitted.tokens, fitted.max_tokens, params, on_text, threading.Event(),
                          time.monotonic() + engine.settings.job_timeout_s)
    end = time.perf_counter()
    cpu = _used(cpu, rig.cpu_seconds())
    rig.settle()  # llama.cpp's threads go idle before the stack's turn
    return Run(first - start, _decode_tps(gen.completion_tokens, first, last), end - start,
               gen.completion_tokens, gen.prompt_tokens, gen.cached_tokens, gen.text, cpu)


def through_stack(rig: Rig, client: openai.OpenAI, body: dict[str, Any]) -> Run:
    parts: list[str] = []
    first = last = 0.0
    usage = None
    job_id = ""
    first_wall = 0.0
    cpu = rig.cpu_seconds()
    sent_wall, start = time.time(), time.perf_counter()
    stream = client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        job_id = chunk.id.removeprefix("chatcmpl-")
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content:
                last = time.perf_counter()
                if not first:
                    first, first_wall = last, time.time()
                parts.append(choice.delta.content)
    end = time.perf_counter()
    if usage is None:
        raise RuntimeError("the stream ended without usage")
    rig.wait_idle(job_id)  # the worker is back on an empty queue before in-process runs
    cpu = _used(cpu, rig.cpu_seconds())
    phases = _phases(rig, job_id, sent_wall, first_wall)
    rig.settle()
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return Run(first - start, _decode_tps(usage.completion_tokens, first, last), end - start,
               usage.completion_tokens, usage.prompt_tokens, cached or 0, "".join(parts), cpu, phases)


@dataclass(frozen=True)
class StreamResult:
    tokens: int
    seed: int
    rounds: int
    n_ctx: int
    n_threads: int
    temperature: float
    local: list[Run]
    stack: list[Run]

    @property
    def ratios(self) -> list[float]:
        """Per round: the two sides ran back to back, so a change in the machine's load
        between rounds cancels out of each round's ratio."""
        return [s.decode_tps / local.decode_tps for s, local in zip(self.stack, self.local)]

    @property
    def ratio(self) -> float:
        return median(self.ratios)

    @property
    def ttft_overhead_ms(self) -> float:
        return median([1000 * (s.ttft_s - local.ttft_s) for s, local in zip(self.stack, self.local)])

    def render(self) -> str:
        def row(name: str, runs: list[Run], same: str) -> list[object]:
            last = runs[-1]
            return [
                name,
                f"{median([r.decode_tps for r in runs]):.1f}",
                f"{1000 * median([r.ttft_s for r in runs]):.1f}",
                f"{median([r.total_s for r in runs]):.2f}",
                f"{last.completion_tokens}",
                f"{last.prompt_tokens}/{last.cached_tokens}",
                " ".join(f"{r.decode_tps:.0f}" for r in runs),
                same,
            ]

        same = "yes" if all(s.text == local.text for s, local in zip(self.stack, self.local)) else "NO"
        ratio, overhead = self.ratio, self.ttft_overhead_ms
        main = table(
            f"stream: {self.tokens} tokens, EOS banned, seed {self.seed}, temperature {self.temperature}, "
            f"n_ctx {self.n_ctx}, n_threads {self.n_threads}; medians of {self.rounds} rounds after a warm-up",
            ["side", "tok/s", "TTFT ms", "total s", "tokens", "prompt/cached", "tok/s per round", "same text"],
            [row("in-process (Engine)", self.local, "-"), row("stack (openai client)", self.stack, same)],
            [
                f"ratio stack/in-process: {ratio:.3f}   target >= {RATIO_TARGET}   {verdict(ratio >= RATIO_TARGET)}   "
                f"(median of per-round ratios: {' '.join(f'{r:.2f}' for r in self.ratios)})",
                f"TTFT overhead: {overhead:.1f} ms   target <= {TTFT_TARGET_MS:.0f} ms (empty queue)   "
                f"{verdict(overhead <= TTFT_TARGET_MS)}   (median of per-round differences)",
            ],
        )
        phases = [[name, f"{median([r.phases_ms[name] for r in self.stack]):.1f}", what] for name, what in PHASES.items()]
        local_ttft = 1000 * median([r.ttft_s for r in self.local])
        breakdown = table(
            "where the stack's TTFT goes (medians; cut at Redis timestamps, 1 ms resolution)",
            ["phase", "ms", "between"],
            [*phases, ["sum", f"{sum(median([r.phases_ms[n] for r in self.stack]) for n in PHASES):.1f}",
                       f"stack TTFT; in-process TTFT (the `model` phase alone) is {local_ttft:.1f}"]],
            align="lrl",
        )
        cpu_rows = []
        for name, runs in (("in-process", self.local), ("stack", self.stack)):
            used = {proc: median([r.cpu_s[proc] for r in runs]) for proc in runs[0].cpu_s}
            cpu_rows.append([name, *(f"{v:.2f}" for v in used.values()), f"{sum(used.values()):.2f}"])
        def per_token_ms(*procs: str) -> float:
            return 1000 * median([sum(r.cpu_s[p] for p in procs) for r in self.stack]) / self.tokens

        model_ms = 1000 * median([r.cpu_s["bench"] for r in self.local]) / self.tokens
        cpu = table(
            "CPU seconds per stream, by process (medians; /proc, 10 ms ticks; `bench` is the in-process model "
            "or the openai client)",
            ["side", *self.local[0].cpu_s, "total"],
            cpu_rows,
            [f"CPU per token: model {model_ms:.2f} ms in-process; through the stack, api + redis "
             f"{per_token_ms('api', 'redis'):.2f} ms and openai client {per_token_ms('bench'):.2f} ms more, "
             "taken from the model's cores here (on a LAN the client is another machine); "
             "llama.cpp threads spin while they wait, so a busy machine inflates CPU too"],
        )
        return f"{main}\n\n{breakdown}\n\n{cpu}"


def run(rig: Rig, rounds: int, tokens: int, seed: int) -> StreamResult:
    body = request_body(rig, tokens, seed)
    key = rig.api_keys([BENCH_USER])[BENCH_USER]
    client = openai.OpenAI(base_url=rig.base_url, api_key=key, max_retries=0, timeout=300)
    try:
        log.info("stream: warm-up")
        in_process(rig, body)
        through_stack(rig, client, body)
        local: list[Run] = []
        stack: list[Run] = []
        for i in range(rounds):
            log.info("stream: round %d/%d", i + 1, rounds)
            if i % 2:
                stack.append(through_stack(rig, client, body))
                local.append(in_process(rig, body))
            else:
                local.append(in_process(rig, body))
                stack.append(through_stack(rig, client, body))
    finally:
        client.close()
    engine = rig.engine
    return StreamResult(tokens, seed, rounds, engine.n_ctx, rig.settings.n_threads, rig.settings.temperature, local, stack)
