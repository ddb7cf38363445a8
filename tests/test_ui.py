"""The chat page in a real browser (Debian chromium via Playwright) against a real api and worker."""

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from rq.job import Job

from tests.stack import Process, Stack, free_port, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TEXTBOX = 'textarea[data-testid="textbox"]'
SUBMIT = 'button[data-testid="submit-button"]'
STOP = 'button[data-testid="stop-button"]'
BOT = '[data-testid="bot"]'
TOAST = '[data-testid="toast-body"]'
NO_END = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end-of-text and turn tokens: never stop early
# Generation speed depends on what else the 2 shared cores run: bound a whole reply generously.
REPLY_S = 240

# Records, from inside the page, each new length of the last bot message: proof that the reply
# grew in steps rather than arriving at once, without sampling from the test's side.
RECORD_GROWTH = """() => {
  window.__lengths = [];
  new MutationObserver(() => {
    const bots = document.querySelectorAll('[data-testid="bot"]');
    const n = bots.length ? bots[bots.length - 1].innerText.trim().length : 0;
    const seen = window.__lengths;
    if (n && seen[seen.length - 1] !== n) seen.push(n);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


class Ui:
    def __init__(self, env: dict[str, str], log_dir: Path):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.proc = Process("ui", [sys.executable, "-m", "ui"], {**env, "UI_PORT": str(port), "LOG_FORMAT": "json"}, log_dir)
        wait_for(lambda: httpx.get(self.url).status_code == 200, 60, "the ui", self.proc)

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.proc.log().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass  # Gradio's own output, if any
        return lines

    def job_ids(self) -> list[str]:
        """Jobs the ui started, oldest first (it logs each one's id, never the content)."""
        return [str(line["job_id"]) for line in self.log_lines() if line.get("msg") == "reply started"]

    def replies_ended(self) -> int:
        return sum(line.get("msg") in ("reply finished", "reply failed", "reply crashed") for line in self.log_lines())


@pytest.fixture(scope="module")
def ui(stack: Stack, log_dir: Path) -> Iterator[Ui]:
    u = Ui(stack.env, log_dir)
    yield u
    u.proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[str], Page]]:
    contexts = []

    def open_(url: str) -> Page:
        context = browser.new_context(viewport={"width": 1000, "height": 800})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url)
        page.wait_for_selector(TEXTBOX)
        return page

    yield open_
    for context in contexts:
        context.close()


def send(page: Page, text: str) -> None:
    page.fill(TEXTBOX, text)
    page.click(SUBMIT)


def ask(page: Page, ui: Ui, text: str) -> str:
    """Send `text` and wait for the whole reply; returns its job id. The end is read from the
    ui's log, not from the buttons: Submit is also visible in the instant before a run starts."""
    jobs, ended = len(ui.job_ids()), ui.replies_ended()
    send(page, text)
    wait_for(lambda: ui.replies_ended() > ended, REPLY_S, "the reply to end", ui.proc)
    expect(page.locator(SUBMIT)).to_be_visible(timeout=10_000)
    return ui.job_ids()[jobs]


def job_status(stack: Stack, job_id: str) -> str:
    return str(httpx.get(f"{stack.base_url}/jobs/{job_id}", timeout=5).json()["status"])


def wait_job_id(ui: Ui, known: int) -> str:
    wait_for(lambda: len(ui.job_ids()) > known, 30, "the ui to log its job id", ui.proc)
    return ui.job_ids()[known]


def first_token(lines: Iterator[str]) -> None:
    """Reads `lines` up to the first token. The caller keeps `lines`: dropping a half-read
    httpx line iterator closes the connection, and the api then cancels that job."""
    for line in lines:
        if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
            return
    raise AssertionError("the stream ended before its first token")


def wait_idle(stack: Stack) -> None:
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{stack.api_port}/readyz").json()["busy"] == 0, 30, "the worker to be idle")


def test_reply_streams_grows_and_completes(ui: Ui, stack: Stack, open_page: Callable[[str], Page], log_dir: Path) -> None:
    wait_idle(stack)
    page = open_page(ui.url)
    page.evaluate(RECORD_GROWTH)
    job_id = ask(page, ui, "Write a four-line poem about a warm fireplace.")

    reply = page.locator(BOT).last.inner_text().strip()
    assert reply, "the reply is empty"
    assert "⚠️" not in reply
    lengths = page.evaluate("window.__lengths")
    assert len(lengths) >= 3 and lengths == sorted(lengths), f"the reply did not stream: lengths seen {lengths}"
    assert job_status(stack, job_id) == "completed"
    assert page.locator(TOAST).count() == 0

    shot = log_dir / "ui-chat-reply.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.mark.timeout(600)  # two replies
def test_second_turn_sends_the_whole_history(ui: Ui, stack: Stack, open_page: Callable[[str], Page]) -> None:
    wait_idle(stack)
    page = open_page(ui.url)
    first = ask(page, ui, "My cat is called Pebble. Answer in one short sentence.")
    second = ask(page, ui, "What is my cat called?")

    first_text = Job.fetch(first, connection=stack.redis).return_value()["text"]
    messages = Job.fetch(second, connection=stack.redis).args[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "My cat is called Pebble. Answer in one short sentence."
    assert first_text.strip() and messages[1]["content"].strip() == first_text.strip()
    assert messages[2]["content"] == "What is my cat called?"


def test_stop_cancels_the_job(ui: Ui, stack: Stack, open_page: Callable[[str], Page]) -> None:
    wait_idle(stack)
    page = open_page(ui.url)
    known = len(ui.job_ids())
    send(page, "Write a very long story about a dragon who guards a library, in many chapters.")
    job_id = wait_job_id(ui, known)
    expect(page.locator(BOT).last).not_to_have_text("", timeout=60_000)  # tokens are arriving
    assert job_status(stack, job_id) == "running"

    page.click(STOP)
    expect(page.locator(SUBMIT)).to_be_visible(timeout=10_000)
    wait_for(lambda: job_status(stack, job_id) == "cancelled", 15, f"job {job_id} to be cancelled", ui.proc)
    wait_idle(stack)
    assert any(line.get("msg") == "reply stopped; cancelling its job" and line.get("job_id") == job_id for line in ui.log_lines())
    assert page.locator(TOAST).count() == 0


def test_waiting_request_shows_its_place_in_line(ui: Ui, stack: Stack, open_page: Callable[[str], Page], log_dir: Path) -> None:
    wait_idle(stack)
    page = open_page(ui.url)
    known, ended = len(ui.job_ids()), ui.replies_ended()
    body = {"messages": [{"role": "user", "content": "Tell me about the sea."}], "stream": True,
            "max_tokens": 2000, "logit_bias": NO_END}  # busy until the test lets go of it
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, timeout=60) as blocker:
        lines = blocker.iter_lines()
        first_token(lines)  # the worker is busy with the blocker now
        send(page, "Hello!")
        expect(page.locator(BOT).last).to_contain_text("You are #1 in line", timeout=30_000)
        page.screenshot(path=str(log_dir / "ui-chat-queued.png"))
    # Closing the blocker's stream makes the api cancel it; the waiting reply then starts.
    expect(page.locator(BOT).filter(has_text="You are #1 in line")).to_have_count(0, timeout=60_000)
    wait_for(lambda: ui.replies_ended() > ended, REPLY_S, "the reply to end", ui.proc)
    assert job_status(stack, ui.job_ids()[known]) == "completed"


@pytest.mark.timeout(600)  # its own worker, three replies
def test_trimmed_context_is_noted_and_the_note_is_not_sent_back(make_stack: Callable[..., Stack], log_dir: Path,
                                                             open_page: Callable[[str], Page]) -> None:
    small = make_stack(N_CTX="512", DEFAULT_MAX_TOKENS="48")
    small.start_worker()
    small.start_api()
    ui = Ui(small.env, log_dir)
    try:
        page = open_page(ui.url)
        long_text = "Please remember this list: " + ", ".join(f"item {i}" for i in range(90)) + "."
        ask(page, ui, long_text)
        expect(page.locator(BOT).filter(has_text="left out")).to_have_count(0)
        ask(page, ui, long_text)  # no longer fits beside the first turn
        expect(page.locator(BOT).filter(has_text="2 earlier messages were left out to fit the model's memory")).to_have_count(1)
        page.screenshot(path=str(log_dir / "ui-chat-trimmed.png"))
        last = ask(page, ui, "Thanks.")

        sent = Job.fetch(last, connection=small.redis).args[0]["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
        assert not any("left out" in m["content"] for m in sent)
    finally:
        ui.proc.stop()


def test_api_down_shows_a_clear_message(log_dir: Path, open_page: Callable[[str], Page]) -> None:
    closed = free_port()  # nothing listens here
    ui = Ui({**os.environ, "API_PORT": str(closed), "API_URL": ""}, log_dir)
    try:
        page = open_page(ui.url)
        started = time.monotonic()
        send(page, "Hello?")
        expect(page.locator(BOT).last).to_contain_text("Hearth's server can't be reached right now", timeout=15_000)
        assert time.monotonic() - started < 15
        expect(page.locator(SUBMIT)).to_be_visible(timeout=10_000)  # ready for another try
        page.screenshot(path=str(log_dir / "ui-api-down.png"))
        assert page.locator(TOAST).count() == 0
        text = page.inner_text("body")
        assert "Traceback" not in text and "ConnectError" not in text
    finally:
        ui.proc.stop()
