"""`hearth batch FILE`: run a file of prompts through the api's Batches API, with a progress
bar, and write the answers when it ends. Needs only the api's address and the user's key."""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from hearth.batch_files import PromptOptions, answers_csv, batch_input

POLL_S = 2.0
ENDED = ("completed", "failed", "expired", "cancelled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a .jsonl in OpenAI's batch format, or a .txt with one prompt per line")
    parser.add_argument("-o", "--output", type=Path, help="where to write the results as JSONL (default: FILE.results.jsonl)")
    parser.add_argument("--csv", type=Path, help="also write prompt and answer side by side as CSV")
    parser.add_argument("--system", default="", help="system prompt for every line of a .txt")
    parser.add_argument("--max-tokens", type=int, help="longest answer for every line of a .txt")
    parser.add_argument("--model", default="", help="model for every line of a .txt (default: the server's)")
    parser.add_argument("--window", default="24h", help="completion window: 24h, or e.g. 90m")
    parser.add_argument("--detach", action="store_true", help="print the batch id and return at once")
    parser.add_argument("--base-url", default=os.environ.get("HEARTH_BASE_URL", "http://127.0.0.1:8000/v1"))
    parser.add_argument("--api-key", default=os.environ.get("HEARTH_API_KEY", ""))


class Api:
    def __init__(self, base_url: str, api_key: str):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise SystemExit(f"hearth: {method} {path}: {response.status_code} {message}")
        return response


def run(args: argparse.Namespace) -> int:
    api = Api(args.base_url, args.api_key)
    data = batch_input(args.file.name, args.file.read_bytes(), PromptOptions(args.model, args.system, args.max_tokens))
    uploaded = api.call("POST", "/files", files={"file": (args.file.stem + ".jsonl", data)}, data={"purpose": "batch"}).json()
    batch = api.call("POST", "/batches", json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                                "completion_window": args.window}).json()
    if args.detach:
        sys.stdout.write(batch["id"] + "\n")
        return 0
    try:
        batch = follow(api, batch)
    except KeyboardInterrupt:
        answer = input(f"\nCancel batch {batch['id']}? The finished lines are kept. [y/N] ").strip().lower()
        if answer != "y":
            sys.stdout.write(f"Batch {batch['id']} goes on; see it with GET /v1/batches/{batch['id']}.\n")
            return 130
        api.call("POST", f"/batches/{batch['id']}/cancel")
        batch = follow(api, batch)
    write_results(api, batch, data, args.output or args.file.with_suffix(".results.jsonl"), args.csv)
    return 0 if batch["status"] == "completed" else 1


def follow(api: Api, batch: dict[str, Any]) -> dict[str, Any]:
    """Poll until the batch ends, showing lines done and failed, with an ETA."""
    with tqdm(total=None, unit="line", desc=batch["id"]) as bar:
        while batch["status"] not in ENDED:
            counts = batch["request_counts"]
            bar.total = counts["total"] or None
            bar.n = counts["completed"] + counts["failed"]
            bar.set_postfix(status=batch["status"], done=counts["completed"], failed=counts["failed"])
            bar.refresh()
            time.sleep(POLL_S)
            batch = api.call("GET", f"/batches/{batch['id']}").json()
        counts = batch["request_counts"]
        bar.total, bar.n = counts["total"], counts["completed"] + counts["failed"]
        bar.set_postfix(status=batch["status"], done=counts["completed"], failed=counts["failed"])
    return batch


def write_results(api: Api, batch: dict[str, Any], sent: bytes, output: Path, csv_path: Path | None) -> None:
    def content(file_id: str | None) -> bytes:
        return api.call("GET", f"/files/{file_id}/content").content if file_id else b""

    answers, errors = content(batch["output_file_id"]), content(batch["error_file_id"])
    output.write_bytes(answers + errors)
    counts = batch["request_counts"]
    sys.stdout.write(f"Batch {batch['id']} {batch['status']}: {counts['completed']} answered, {counts['failed']} failed -> {output}\n")
    if csv_path is not None:
        csv_path.write_text(answers_csv(sent, answers, errors))
