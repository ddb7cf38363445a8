"""`models`: one worker given two models (the bench's own and the Mistral-7B-shaped one that
tools/shaped_gguf.py writes once into the user's cache) with a memory budget that holds one of
them, as a laptop serving a small and a big model would run. Per model: its load time (the
worker's own count), the worker's resident memory with it loaded, the first token of a request
that has to swap it in against the same request once it is loaded, and tokens/s through the
stack against the same generation in-process (7B-shaped only: the in-process copy of the
bench's own model is what `stream` measures)."""

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import openai

from bench.report import table
from bench.rig import Rig, end_tokens
from bench.stream import Run, in_process, through_stack
from hearth.contract import METRICS_KEY
from hearth.metrics import ModelCounter, model_field
from tools.shaped_gguf import cached_shaped_gguf
from worker.engine import Engine
from worker.models import catalog
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

BENCH_USER = "bench-models"
PROMPT = "Write a short note about the weather."
OTHER_PROMPT = "Write a short note about the harbour."  # as long: the loaded run's prompt is not in the cache


@dataclass(frozen=True)
class Served:
    model: str
    load_s: float  # the worker's own count of the swap's load (hearth_model_load_seconds)
    rss_mb: float  # the worker's resident memory with this model loaded (the other unloaded)
    swapped: Run  # the first request, which waited for the swap
    warm: Run  # as long a request, the model loaded
    local: Run | None  # in-process, same body


def rss_mb(pid: int) -> float:
    """VmRSS from /proc/PID/status (Linux); nan elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return kb / 1024 if kb is not None else float("nan")


def body(model: str, tokens: int, seed: int, path: Path, prompt: str = PROMPT) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0.0,
            "seed": seed, "logit_bias": {str(t): b for t, b in end_tokens(str(path)).items()}}


@dataclass(frozen=True)
class ModelsResult:
    tokens: int
    served: list[Served]

    def render(self) -> str:
        rows = []
        for s in self.served:
            swap_ms = 1000 * (s.swapped.ttft_s - s.warm.ttft_s)
            local = f"{s.local.decode_tps:.2f}" if s.local else "-"
            ratio = f"{s.warm.decode_tps / s.local.decode_tps:.3f}" if s.local else "-"
            rows.append([s.model, f"{s.load_s:.2f}", f"{s.rss_mb:.0f}", f"{1000 * s.swapped.ttft_s:.0f}",
                         f"{1000 * s.warm.ttft_s:.0f}", f"{swap_ms:.0f}", f"{s.swapped.prompt_tokens}/{s.swapped.cached_tokens}, "
                         f"{s.warm.prompt_tokens}/{s.warm.cached_tokens}", f"{s.warm.decode_tps:.2f}", local, ratio])
        return table(
            f"models: one worker, two models, a memory budget that holds one (MODEL_MEMORY_BUDGET_MB=0); "
            f"{self.tokens} tokens per request, end tokens banned, temperature 0",
            ["model", "load s", "worker RSS MB", "TTFT swapping in ms", "TTFT loaded ms", "swap cost ms",
             "prompt/cached", "tok/s stack", "tok/s in-process", "ratio"],
            rows,
            ["load s: the worker's hearth_model_load_seconds for that swap (unloading the other model is in the "
             "swap cost, not here); swap cost: first token swapping in minus first token of an as long prompt, loaded (prompt/cached tokens of the two); RSS counts the "
             "model's pages the worker has touched (llama.cpp maps the file)",
             *(f"{s.model} swapping in, where the first token's time went: "
               + ", ".join(f"{name} {ms:.0f} ms" for name, ms in s.swapped.phases_ms.items()) for s in self.served)],
        )


def _loaded_seconds(rig: Rig, model: str) -> float:
    raw = rig.redis.hget(METRICS_KEY, model_field(ModelCounter.LOAD_SECONDS, model))
    return float(raw) if raw else 0.0


def _wait_loaded(rig: Rig, model: str, before: float, timeout: float = 600) -> float:
    """Seconds of the load counted since `before`, once the worker counted it."""
    deadline = time.monotonic() + timeout
    while (seconds := _loaded_seconds(rig, model) - before) <= 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker counted no load of {model}")
        time.sleep(0.05)
    return seconds


def run(rig: Rig, tokens: int, seed: int, preset: str) -> ModelsResult:
    """`preset`: the shapes of the other model (tools/shaped_gguf.py)."""
    big = cached_shaped_gguf(preset)
    small = Path(rig.settings.model_path)
    log.info("models: a worker with %s and %s, a budget for one", small.name, big.name)
    rig.swap_worker(unset=("MODEL_PATH", "MODEL_NAME"), MODELS=f"{small},{big}", MODEL_MEMORY_BUDGET_MB="0")
    key = rig.api_keys([BENCH_USER])[BENCH_USER]
    client = openai.OpenAI(base_url=rig.base_url, api_key=key, max_retries=0, timeout=900)
    served: list[Served] = []
    try:
        for model_id, path in ((big.stem, big), (small.stem, small)):  # the big one first: the worker starts with the small
            request = body(model_id, tokens, seed, path)
            before = _loaded_seconds(rig, model_id)
            log.info("models: %s, swapping it in", model_id)
            swapped = through_stack(rig, client, request)
            load_s = _wait_loaded(rig, model_id, before)
            rss = rss_mb(rig.stack.workers[0].popen.pid)
            log.info("models: %s, loaded", model_id)
            warm = through_stack(rig, client, body(model_id, tokens, seed, path, OTHER_PROMPT))
            served.append(Served(model_id, load_s, rss, swapped, warm, None))
    finally:
        client.close()
    log.info("models: %s in-process", big.stem)  # after the swap back: the worker holds the small one
    settings = WorkerSettings(model_path=str(big))
    engine = Engine(settings, catalog(settings)[big.stem], None)
    served[0] = replace(served[0], local=in_process(rig, body(big.stem, tokens, seed, big), engine))
    return ModelsResult(tokens, served)
