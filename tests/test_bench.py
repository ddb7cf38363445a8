"""`python -m bench` at its smallest size, through the real stack: it runs and prints numbers.
Never a speed assertion: this machine is shared, only the bench's own ratios mean anything."""

import re
import subprocess
import sys

import pytest

from tests.stack import ROOT

SMALLEST = ["--rounds", "1", "--tokens", "16", "--users", "2", "--chats", "1", "--max-tokens", "8", "--turns", "2",
            "--lines", "2", "--line-tokens", "8", "--inputs", "4", "--model-tokens", "4", "--other-model", "mistral-tiny"]


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no match for {pattern!r} in:\n{text}"
    return float(match.group(1))


@pytest.mark.timeout(660)  # seconds alone, minutes on a machine that others share
def test_bench_runs_every_case_and_prints_its_numbers() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", *SMALLEST], cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"

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
