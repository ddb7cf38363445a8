"""`hearth batch`: a file of prompts through the api, as a person runs it from a terminal."""

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from devstack import ROOT, Stack, wait_for
from tests.chats import NO_END


def hearth(stack: Stack, *args: str) -> list[str]:
    return [sys.executable, "-m", "cli", "batch", *args, "--base-url", stack.base_url]


def test_batch_of_a_text_file_writes_jsonl_and_csv(stack: Stack, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say yes.\nName a colour.\n")
    out, table = tmp_path / "answers.jsonl", tmp_path / "answers.csv"
    done = subprocess.run(hearth(stack, str(prompts), "-o", str(out), "--csv", str(table), "--max-tokens", "6",
                                 "--system", "Be brief."), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "completed: 2 answered, 0 failed" in done.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["line-1", "line-2"]
    assert all(line["response"]["body"]["usage"]["completion_tokens"] <= 6 for line in lines)
    rows = list(csv.DictReader(table.open()))
    assert [(r["custom_id"], r["prompt"]) for r in rows] == [("line-1", "Say yes."), ("line-2", "Name a colour.")]
    assert all(r["answer"] for r in rows)


def test_detach_returns_the_batch_id_at_once(stack: Stack, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                                   "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}}) + "\n")
    done = subprocess.run(hearth(stack, str(prompts), "--detach"), cwd=ROOT, capture_output=True, text=True, timeout=60)
    batch_id = done.stdout.strip()
    assert done.returncode == 0 and batch_id.startswith("batch_")
    wait_for(lambda: httpx.get(f"{stack.base_url}/batches/{batch_id}").json()["status"] == "completed", 120, "the detached batch")


def test_ctrl_c_asks_and_cancels_the_batch(stack: Stack, tmp_path: Path) -> None:
    prompts = tmp_path / "long.jsonl"
    body = {"messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 4000, "logit_bias": NO_END}
    prompts.write_text("".join(json.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n"
                               for i in range(2)))
    proc = subprocess.Popen(hearth(stack, str(prompts), "-o", str(tmp_path / "out.jsonl")), cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: bool(stack.redis.hgetall("hearth:running")), 60, "a line to run")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate("y\n", timeout=120)
    assert "Cancel batch" in out and "cancelled: 0 answered, 2 failed" in out, err
    assert proc.returncode == 1
    errors = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
