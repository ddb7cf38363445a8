"""The Batch tab: upload a file of prompts, follow one's batches as they run, cancel one, and
download its answers as JSONL or CSV. Everything goes through the api's Files and Batches API."""

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from hearth.batch_files import PromptOptions, answers_csv, batch_input
from ui.client import ApiError, HearthClient

TAB = "Batch"
REFRESH_S = 2.0
COLUMNS = ["batch", "status", "progress", "done", "failed", "lines", "created"]
HELP = ("Upload a `.jsonl` in OpenAI's batch format, or a `.txt` with one prompt per line (the system "
        "prompt and answer length below apply to every line). Batches run while nobody is chatting: "
        "a chat always goes first.")
ENDED = ("completed", "failed", "expired", "cancelled")


def progress(batch: dict[str, Any]) -> str:
    counts = batch["request_counts"]
    total, finished = counts["total"], counts["completed"] + counts["failed"]
    if not total:
        return "—"
    filled = round(20 * finished / total)
    return f"{'█' * filled}{'░' * (20 - filled)} {100 * finished // total}%"


def batch_table(batches: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [[b["id"], b["status"], progress(b), b["request_counts"]["completed"], b["request_counts"]["failed"],
             b["request_counts"]["total"], pd.Timestamp(b["created_at"], unit="s", tz="UTC").tz_convert(None).strftime("%Y-%m-%d %H:%M")]
            for b in batches]
    return pd.DataFrame(rows, columns=COLUMNS)


@dataclass(frozen=True)
class BatchTab:
    timer: gr.Timer
    table: gr.Dataframe
    notes: list[gr.Markdown]  # the actions' message line and the polling's

    def reset(self) -> dict[gr.blocks.Block, Any]:
        """Updates that stop the polling and forget the last user's batches (for a sign-out)."""
        return {self.timer: gr.Timer(active=False), self.table: batch_table([]), **{note: "" for note in self.notes}}


def _choices(batches: list[dict[str, Any]]) -> list[str]:
    return [b["id"] for b in batches]


def make_refresh(client: HearthClient) -> Callable[[str | None, str | None], Awaitable[tuple[pd.DataFrame, str, Any]]]:
    async def refresh_batches(api_key: str | None, chosen: str | None) -> tuple[pd.DataFrame, str, Any]:
        """The table, the polling's own note (empty once the api answers again), and the batches
        to choose from (the one chosen stays chosen)."""
        try:
            batches = await client.with_key(api_key).batches()
        except ApiError as exc:
            return batch_table([]), f"⚠️ {exc.message}", gr.skip()
        choices = _choices(batches)
        return batch_table(batches), "", gr.Dropdown(choices=choices, value=chosen if chosen in choices else None)

    return refresh_batches


def batch_tab(client: HearthClient, api_key: gr.State, tabs: gr.Tabs) -> BatchTab:
    """The tab, added inside `tabs` (being built); it polls only while it is the open one."""
    with gr.Tab(TAB, id="batch"):
        gr.Markdown(HELP)
        with gr.Row():
            upload = gr.File(label="Prompts (.txt or .jsonl)", file_types=[".txt", ".jsonl"], elem_id="hearth-batch-file")
            with gr.Column():
                system = gr.Textbox(label="System prompt (.txt only)", lines=2, elem_id="hearth-batch-system")
                max_tokens = gr.Number(label="Longest answer, tokens (.txt only; empty = default)", precision=0, elem_id="hearth-batch-max-tokens")
                start = gr.Button("Run batch", variant="primary", elem_id="hearth-batch-start")
        message = gr.Markdown("", elem_id="hearth-batch-message")
        table = gr.Dataframe(value=batch_table([]), label="Your batches", interactive=False, elem_id="hearth-batches")
        # The polling's own line: a refresh clears it, never the answer to what the person did.
        polling = gr.Markdown("", elem_id="hearth-batch-polling")
        with gr.Row():
            chosen = gr.Dropdown(label="Batch", choices=[], elem_id="hearth-batch-chosen")
            cancel = gr.Button("Cancel batch", elem_id="hearth-batch-cancel")
            download = gr.Button("Download answers", elem_id="hearth-batch-download")
        files = gr.File(label="Answers", file_count="multiple", interactive=False, elem_id="hearth-batch-results")
        timer = gr.Timer(REFRESH_S, active=False)
        # Inside the tab: a component made between two tabs counts as a child of the tab bar,
        # whose next tab then registered at the wrong place and showed twice ("Status, Status").
        written = gr.State(None)

    refresh = make_refresh(client)
    outputs = [table, polling, chosen]

    async def run_batch(path: str | None, system_prompt: str, tokens: float | None, key: str | None) -> tuple[pd.DataFrame, str, Any]:
        if not path:
            return gr.skip(), "Choose a file first.", gr.skip()
        name = Path(path).name
        options = PromptOptions(system=system_prompt.strip(), max_tokens=int(tokens) if tokens else None)
        jsonl = batch_input(name, Path(path).read_bytes(), options)
        try:
            batch = await client.with_key(key).start_batch(Path(name).stem + ".jsonl", jsonl)
        except ApiError as exc:
            return gr.skip(), f"⚠️ {exc.message}", gr.skip()
        table_, _, choices = await refresh(key, batch["id"])
        return table_, f"Started {batch['id']}.", choices

    async def cancel_batch(batch_id: str | None, key: str | None) -> str:
        if not batch_id:
            return "Choose a batch first."
        try:
            await client.with_key(key).cancel_batch(batch_id)
        except ApiError as exc:
            return f"⚠️ {exc.message}"
        return f"Cancelling {batch_id}: finished answers are kept."

    async def download_answers(batch_id: str | None, key: str | None) -> tuple[Any, str, str | None]:
        """The answers as files for the page (Gradio copies them into its cache, which it empties
        by age: `ui.app.CACHE_LIFE_S`); the folder they are written to is removed next."""
        if not batch_id:
            return gr.skip(), "Choose a batch first.", None
        session = client.with_key(key)
        try:
            batch = await session.batch(batch_id)
            if batch["status"] not in ENDED:
                return gr.skip(), f"{batch_id} is still {batch['status']}; its answers come when it ends.", None
            sent = await session.file_content(batch["input_file_id"])
            answers, errors = await session.file_content(batch["output_file_id"]), await session.file_content(batch["error_file_id"])
        except ApiError as exc:
            return gr.skip(), f"⚠️ {exc.message}", None
        folder = Path(tempfile.mkdtemp(prefix="hearth-batch-"))
        jsonl, csv = folder / f"{batch_id}.jsonl", folder / f"{batch_id}.csv"
        jsonl.write_bytes(answers + errors)
        csv.write_text(answers_csv(sent, answers, errors))
        return [str(jsonl), str(csv)], "", str(folder)

    def remove(folder: str | None) -> None:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)

    start.click(run_batch, inputs=[upload, system, max_tokens, api_key], outputs=[table, message, chosen])
    cancel.click(cancel_batch, inputs=[chosen, api_key], outputs=message)
    download.click(download_answers, inputs=[chosen, api_key], outputs=[files, message, written]).then(remove, inputs=[written])
    timer.tick(refresh, inputs=[api_key, chosen], outputs=outputs, show_progress="hidden")

    async def on_tab(event: gr.SelectData, key: str | None, current: str | None) -> tuple[Any, ...]:
        """Poll while this tab is the open one, starting with a refresh as it opens."""
        if event.value != TAB:
            return gr.Timer(active=False), gr.skip(), gr.skip(), gr.skip()
        return gr.Timer(active=True), *await refresh(key, current)

    tabs.select(on_tab, inputs=[api_key, chosen], outputs=[timer, *outputs], show_progress="hidden", api_visibility="private")
    return BatchTab(timer, table, [message, polling])
