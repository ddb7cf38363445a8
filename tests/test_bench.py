"""`python -m bench` at its smallest size, through the real stack: it runs and prints numbers.
Never a speed assertion: this machine is shared, only the bench's own ratios mean anything."""

import re
import subprocess
import sys

import pytest

from devstack import ROOT

SMALLEST = ["--idle-seconds", "2", "--requests", "1", "--rounds", "1", "--tokens", "16", "--users", "2", "--chats", "1", "--max-tokens", "8", "--turns", "2",
            "--lines", "2", "--line-tokens", "8", "--history-tokens", "64", "--tool-requests", "2", "--inputs", "4", "--model-tokens", "4",
            "--other-model", "mistral-tiny", "--questions", "2", "--pages", "11",
            "--hybrid-questions", "1", "--hybrid-pages", "11"]


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no match for {pattern!r} in:\n{text}"
    return float(match.group(1))


@pytest.mark.timeout(960)  # seconds alone, minutes on a machine that others share
def test_bench_runs_every_case_and_prints_its_numbers() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", *SMALLEST], cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"

    # Idle: every process's share of a core, their sum against the target, and how fast work starts.
    for process in ("worker", "api", "redis", "ui"):
        assert number(rf"^{process}\s+[\d.]+\s+([\d.]+)$", out) >= 0
    idle = re.search(r"^idle stack: ([\d.]+) % of one core\s+target <= ([\d.]+) %\s+(OK|MISSED)$", out, re.MULTILINE)
    assert idle, out
    assert idle.group(3) == ("OK" if float(idle.group(1)) <= float(idle.group(2)) else "MISSED"), idle.group(0)
    for phase in ("chat: request sent", "chat: queued", "batch: created", "batch: its line ended"):
        assert number(rf"^{phase}.*?\s(-?[\d.]+)\s+-?\d+$", out) >= 0, phase  # its median, then each request's value

    assert number(r"^in-process \(Engine\)\s+([\d.]+)\s", out) > 0  # tok/s
    assert number(r"^stack \(openai client\)\s+([\d.]+)\s", out) > 0
    assert re.search(r"^stack \(openai client\).*\byes$", out, re.MULTILINE), "same seed and settings, different text"
    # Each verdict agrees with the number and target printed beside it (never a speed assertion).
    for label, unit, op in (("ratio stack/in-process", "", ">="), ("TTFT overhead", " ms", "<=")):
        line = re.search(rf"^{label}: (-?[\d.]+){unit}\s+target {op} ([\d.]+){unit}.*?\s(OK|MISSED)\s", out, re.MULTILINE)
        assert line, f"no {label} line in:\n{out}"
        value, target = float(line.group(1)), float(line.group(2))
        assert line.group(3) == ("OK" if (value >= target if op == ">=" else value <= target) else "MISSED"), line.group(0)
    assert number(r"^ratio stack/in-process: ([\d.]+)", out) > 0
    assert number(r"^sum\s+([\d.]+)\s+stack TTFT", out) > 0

    assert re.search(r"^json_schema\s+[\d.]+\s+[\d.]+\s+16\s", out, re.MULTILINE), out  # as many tokens as free text
    assert number(r"^ratio json_schema/free tok/s: ([\d.]+)", out) > 0

    assert re.search(r"^valid arguments: 100\.0 % \(2/2 requests", out, re.MULTILINE), out
    assert number(r"^ratio tools/free tok/s: ([\d.]+)", out) > 0

    assert re.search(r"^2 users at once\s+2/0\s", out, re.MULTILINE), out  # completed/failed
    assert number(r"^2 users at once(?:\s+\S+){6}\s+([\d.]+)$", out) > 0  # completion tok/s
    assert number(r"^aggregate/single-stream tok/s: ([\d.]+)", out) > 0

    # Turn 2 of the context case: with the state cache the history is not evaluated again.
    turn = re.search(r"^2\s+(\d+)\s+(\d+)\s+\d+\s+(\d+)\s+\d+$", out, re.MULTILINE)
    assert turn, out
    prompt, cache_on, cache_off = map(int, turn.groups())
    assert 0 < cache_on < cache_off <= prompt, turn.group(0)
    assert re.search(r"^last turn: cache on evaluates \d+ of \d+ prompt tokens, cache off \d+", out, re.MULTILINE), out

    assert re.search(r"^batch \(completed\)\s+[\d.]+\s+\d+$", out, re.MULTILINE), out
    assert number(r"^ratio batch/in-process: ([\d.]+)", out) > 0

    # A conversation's next turn restores its history from memory, from disk after a swap and
    # after a restart, and from the worker holding it while another is free (routed there);
    # with nothing saved, it is evaluated in full.
    for label, restored in (("a) in the worker's memory", True), ("b) on disk, after a worker restart", True),
                            ("c) on disk, after a swap away and back", True), ("d) on the other of two workers, routed to it", True),
                            ("e) nothing saved", False)):
        row = re.search(rf"^{re.escape(label)}\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.MULTILINE)
        assert row, f"no {label!r} row in:\n{out}"
        ttft_ms, prompt, cached = map(int, row.groups())
        assert ttft_ms > 0 and (64 <= cached < prompt if restored else cached == 0), row.group(0)
    assert re.search(r"^restores \(worker logs, 3\): median [\d.]+ MiB for \d+ tokens, \d+ ms$", out, re.MULTILINE), out
    assert re.search(r"^hit rate in the top 5: [\d.]+\s+target >= 0\.95\s+(OK|MISSED)$", out, re.MULTILINE), out  # retrieval
    assert 0 <= number(r"^hybrid hit rate in the top 5: ([\d.]+)$", out) <= 1  # fused with the chunks' vectors
    assert number(r"^embedding a document's chunks, per page\s+([\d.]+) s", out) > 0
    assert number(r"^stack \(files\.create user_data\)\s+([\d.]+)\s", out) > 0  # extraction pages/s
    assert number(r"^stack \(/v1/embeddings\)\s+([\d.]+)\s", out) > 0  # inputs/s
    assert number(r"^ratio stack/in-process inputs/s: ([\d.]+)", out) > 0
    assert number(r"^least cosine between the two sides' vectors: ([\d.]+)", out) > 0.999  # the same vectors

    # Both models loaded in turn on one worker: each row has its load time and the worker's memory.
    for model in ("mistral-tiny-shaped", "SmolLM2"):
        row = re.search(rf"^{model}\S*\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)\s", out, re.MULTILINE)
        assert row and all(float(v) > 0 for v in row.groups()), f"no {model} row in:\n{out}"


def test_bench_rejects_an_unknown_case() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "nosuchcase"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown case 'nosuchcase'" in done.stderr
