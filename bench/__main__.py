"""`python -m bench [stream] [load] [--rounds N] [--users N] …`: start the stack, run the cases,
print one table per case on stdout (progress goes to stderr)."""

import argparse
import logging
import os
import sys
from collections.abc import Callable

from api.settings import ApiSettings
from bench import batch, context, documents, extraction, grammar, idle, load, models, retrieval, states, stream, tool_calls
from bench.rig import Rig
from hearth.logs import setup_logging
from hearth.settings import CommonSettings
from tools.shaped_gguf import PRESETS, cached_shaped_gguf
from worker.settings import WorkerSettings

CASES: dict[str, Callable[[Rig, argparse.Namespace], str]] = {
    "idle": lambda rig, a: idle.run(rig, a.idle_seconds, a.requests).render(),  # first: nothing else has run yet
    "stream": lambda rig, a: stream.run(rig, a.rounds, a.tokens, a.seed).render(),
    "grammar": lambda rig, a: grammar.run(rig, a.rounds, a.tokens, a.seed).render(),
    "tools": lambda rig, a: tool_calls.run(rig, a.tool_requests, a.seed).render(),
    "load": lambda rig, a: load.run(rig, a.users, a.chats, a.max_tokens, a.seed).render(),
    "context": lambda rig, a: context.run(rig, a.turns, a.max_tokens, a.seed).render(),
    "batch": lambda rig, a: batch.run(rig, a.lines, a.line_tokens, a.seed).render(),
    "states": lambda rig, a: states.run(rig, a.history_tokens, a.seed).render(),
    "documents": lambda rig, a: "\n\n".join((retrieval.run(rig, a.questions, a.pages, a.seed, a.hybrid_questions, a.hybrid_pages).render(), documents.run(rig, a.inputs, a.rounds, a.seed).render(),
                                              extraction.run(rig, a.rounds).render())),
    "models": lambda rig, a: models.run(rig, a.model_tokens, a.seed, a.other_model).render(),  # last: it replaces the worker
}


def machine_note(before: float, after: float) -> str:
    cores = os.cpu_count() or 1
    note = f"machine: {cores} cores; 1-min load average {before:.2f} before, {after:.2f} after"
    if max(before, after) > cores:
        note += " (more runnable work than cores: other processes competed, expect noise)"
    return note


def at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark Hearth against in-process llama.cpp. Model and sampling settings are the "
                    "worker's (MODEL_PATH, N_THREADS, N_CTX, TEMPERATURE, … from the environment).",
    )
    p.add_argument("cases", nargs="*", metavar="case", help=f"cases to run: {', '.join(CASES)} (default: all)")
    p.add_argument("--seed", type=int, default=1234, help="sampling seed (default: %(default)s)")
    p.add_argument("--shaped", choices=PRESETS, help="serve a random-weight model of this preset's shapes instead of MODEL_PATH "
                                                     "(made once by tools/shaped_gguf.py, kept in ~/.cache/hearth/models)")
    i = p.add_argument_group("idle")
    i.add_argument("--idle-seconds", type=at_least(1), default=30, help="seconds without traffic measured (default: %(default)s)")
    i.add_argument("--requests", type=at_least(1), default=3, help="chats and one-line batches timed after it (default: %(default)s)")
    s = p.add_argument_group("stream, grammar and documents")
    s.add_argument("--rounds", type=at_least(1), default=5, help="measured rounds per side, after a warm-up (default: %(default)s)")
    s.add_argument("--tokens", type=at_least(2), default=200, help="completion tokens per stream, at least 2 (default: %(default)s)")
    t = p.add_argument_group("tools")
    t.add_argument("--tool-requests", type=at_least(1), default=200, help="tool-call requests, each also run without tools (default: %(default)s)")
    g = p.add_argument_group("load")
    g.add_argument("--users", type=at_least(1), default=8, help="simulated users (default: %(default)s)")
    g.add_argument("--chats", type=at_least(1), default=3, help="chats per user, one after another (default: %(default)s)")
    g.add_argument("--max-tokens", type=at_least(1), default=48, help="completion tokens per chat (default: %(default)s)")
    c = p.add_argument_group("context")
    c.add_argument("--turns", type=at_least(1), default=8, help="turns of each interleaved conversation (default: %(default)s)")
    b = p.add_argument_group("batch")
    b.add_argument("--lines", type=at_least(1), default=6, help="batch lines (default: %(default)s)")
    b.add_argument("--line-tokens", type=at_least(1), default=64, help="completion tokens per line (default: %(default)s)")
    t = p.add_argument_group("states")
    t.add_argument("--history-tokens", type=at_least(64), default=1500,
                   help="prompt tokens of the conversation whose next turn is measured (default: %(default)s)")
    d = p.add_argument_group("documents")
    d.add_argument("--inputs", type=at_least(1), default=64, help="texts embedded in one call, each side (default: %(default)s)")
    d.add_argument("--questions", type=at_least(1), default=40, help="needle questions for retrieval, each on its own document (default: %(default)s)")
    d.add_argument("--pages", type=at_least(11), default=200, help="pages of each needle question's document (default: %(default)s)")
    d.add_argument("--hybrid-questions", type=at_least(1), default=5,
                   help="needle questions ranked with embeddings too, each document's chunks embedded first (default: %(default)s)")
    d.add_argument("--hybrid-pages", type=at_least(11), default=20, help="pages of each of their documents (default: %(default)s)")
    m = p.add_argument_group("models")
    m.add_argument("--model-tokens", type=at_least(2), default=16,
                   help="completion tokens per request; the 7B-shaped model makes about 2 a second on 2 cores (default: %(default)s)")
    m.add_argument("--other-model", choices=PRESETS, default="mistral-7b",
                   help="shapes of the model served beside the bench's own (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    unknown = [name for name in args.cases if name not in CASES]
    if unknown:
        p.error(f"unknown case {unknown[0]!r} (choose from {', '.join(CASES)})")
    setup_logging("bench", CommonSettings(log_format="text"))
    for noisy in ("httpx", "httpx2"):  # one line per request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    names = list(dict.fromkeys(args.cases)) or list(CASES)
    settings = WorkerSettings(model_path=str(cached_shaped_gguf(args.shaped))) if args.shaped else WorkerSettings()
    with Rig(settings, ApiSettings()) as rig:
        for name in names:
            before = os.getloadavg()[0]
            text = CASES[name](rig, args)
            print(f"{text}\n{machine_note(before, os.getloadavg()[0])}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
