"""The chat page in a real browser (Debian chromium via Playwright) against a real api and worker."""

import csv
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from rq.job import Job

from devstack import MODEL, ROOT, RedisServer, Stack, UiServer, add_user, free_port, serve, wait_for
from hearth.contract import RQ_SERIALIZER, events_key
from tests.hostile import hostile_text, leak_url
from tests.screenshots import readme_shot
from tests.sse import job_events
from tests.test_several_models import MISTRAL, answered_by, two_model_stack
from ui.settings import KEY_FILE
from ui.status import REFRESH_S, SPAN_S

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TEXTBOX = '#hearth-input textarea[data-testid="textbox"]'  # the message (the sidebar has text boxes too)
SUBMIT = '#hearth-input button[data-testid="submit-button"]'
STOP = '#hearth-input button[data-testid="stop-button"]'
BOT = '[data-testid="bot"]'
TOAST = '[data-testid="toast-body"]'
GATE = "#hearth-gate-text"  # "Connecting…", or why the api can't be reached
RETRY = "#hearth-retry"
SIGNIN = "#hearth-signin"
SIGNIN_MESSAGE = "#hearth-signin-message"
USERNAME = "#hearth-username input"
SECRET = "#hearth-secret input"
SIGN_IN = "#hearth-sign-in"
WHO = "#hearth-who"
SIGN_OUT = "#hearth-sign-out"
NO_END = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end-of-text and turn tokens: never stop early
# Generation speed depends on what else the 2 shared cores run: bound a whole reply generously.
REPLY_S = 240

# Records, from inside the page, each new length of the last bot message: proof that the reply
# grew in steps rather than arriving at once, without sampling from the test's side.
# The reply is the first bot message after those on the page now; a note that follows it (cut
# short) is a message of its own and is not measured.
RECORD_GROWTH = """() => {
  window.__lengths = [];
  const reply = document.querySelectorAll('[data-testid="bot"]').length;
  new MutationObserver(() => {
    const bots = document.querySelectorAll('[data-testid="bot"]');
    const n = bots.length > reply ? bots[reply].innerText.trim().length : 0;
    const seen = window.__lengths;
    if (n && seen[seen.length - 1] !== n) seen.push(n);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


class Ui(UiServer):
    """The ui process, and what its log says it did."""

    def job_ids(self) -> list[str]:
        """Jobs the ui started, oldest first (it logs each one's id, never the content)."""
        return [str(line["job_id"]) for line in self.log_lines() if line.get("msg") == "reply started"]

    def resumed(self, job_id: str) -> int:
        """How often the ui followed `job_id` again (a reload, a conversation opened again)."""
        return sum(line.get("msg") == "reply resumed" and line.get("job_id") == job_id for line in self.log_lines())

    def replies_ended(self) -> int:
        return sum(line.get("msg") in ("reply finished", "reply failed", "reply crashed") for line in self.log_lines())


@pytest.fixture(scope="module")
def ui(stack: Stack, log_dir: Path) -> Iterator[Ui]:
    u = Ui(stack.env, log_dir)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)")
    expect.set_options(timeout=15_000)  # the machine is shared: a page may take a while to answer
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Opens a page in a browser context of its own: its own cookies and storage, its own ui session."""
    contexts = []

    def open_(url: str, width: int = 1000, height: int = 800, timezone: str | None = None) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height}, timezone_id=timezone)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def open_page(new_page: Callable[[str], Page]) -> Callable[[str], Page]:
    """Opens the chat of a ui whose api has auth off: no sign-in, straight to the chat."""

    def open_(url: str) -> Page:
        page = new_page(url)
        page.wait_for_selector(TEXTBOX)
        return page

    return open_


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


def job_status(stack: Stack, job_id: str, key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return str(httpx.get(f"{stack.base_url}/jobs/{job_id}", headers=headers, timeout=5).json()["status"])


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
    # The api has auth off: no sign-in form, no one signed in.
    assert page.locator(SIGNIN).count() == 0 and page.locator(SIGN_OUT).count() == 0
    expect(page.locator(WHO)).to_have_text("")
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

    first_text = "".join(json.loads(e.data)["text"] for e in job_events(stack.base_url, first) if e.event == "token")
    messages = Job.fetch(second, connection=stack.redis, serializer=RQ_SERIALIZER).args[0]["messages"]
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
        ahead = {**body, "max_tokens": 4}
        with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=ahead, timeout=60):  # queued once its headers are in
            send(page, "Hello!")
            expect(page.locator(BOT).last).to_contain_text("You are #2 in line", timeout=30_000)
            page.screenshot(path=str(log_dir / "ui-chat-queued.png"))
        # The one ahead left (its stream closed, the api cancelled it): one place up.
        expect(page.locator(BOT).last).to_contain_text("You are #1 in line", timeout=30_000)
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

        sent = Job.fetch(last, connection=small.redis, serializer=RQ_SERIALIZER).args[0]["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
        assert not any("left out" in m["content"] for m in sent)
    finally:
        ui.stop()


def no_error_details(page: Page, notes: tuple[str, ...] = ()) -> None:
    """No error toast (the page's own notes, `notes`, may still show) and no error's insides on the page."""
    assert all(any(n in toast for n in notes) for toast in page.locator(TOAST).all_inner_texts()), page.locator(TOAST).all_inner_texts()
    text = page.inner_text("body")
    assert not any(word in text for word in ("Traceback", "Exception", "Errno", "ConnectError"))


def test_api_down_shows_a_clear_message(make_stack: Callable[..., Stack], log_dir: Path,
                                        new_page: Callable[[str], Page]) -> None:
    stack = make_stack(MAX_WAITING_PER_USER="1")  # auth off; its api starts later; no worker: what is queued waits
    ui = Ui(stack.env, log_dir)
    try:
        # At page load the ui asks the api whether to sign in; it is down: say so, offer a retry.
        page = new_page(ui.url)
        expect(page.locator(GATE)).to_contain_text("Hearth's server can't be reached right now", timeout=15_000)
        assert page.locator(TEXTBOX).count() == 0 and page.locator(SIGNIN).count() == 0
        page.screenshot(path=str(log_dir / "ui-api-down-at-load.png"))
        page.click(RETRY)
        expect(page.locator(GATE)).to_contain_text("can't be reached", timeout=15_000)
        no_error_details(page)
        stack.start_api()
        page.click(RETRY)  # auth is off: straight to the chat
        expect(page.locator(TEXTBOX)).to_be_visible(timeout=15_000)
        assert page.locator(SIGNIN).count() == 0

        # One chat of this user already waits: the next is refused (429), and the page says when to try again.
        waiting = {"model": "any", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 4}
        with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=waiting, timeout=30) as queued:
            assert queued.status_code == 200
            send(page, "Hello?")
            expect(page.locator(BOT).last).to_contain_text(re.compile(r"Hearth is busy right now\. Try again in \d+ s\."))
            expect(page.locator(SUBMIT)).to_be_visible(timeout=10_000)
        no_error_details(page)

        stack.api.stop()
        started = time.monotonic()
        send(page, "Hello?")
        expect(page.locator(BOT).last).to_contain_text("Hearth's server can't be reached right now", timeout=15_000)
        assert time.monotonic() - started < 15
        expect(page.locator(SUBMIT)).to_be_visible(timeout=10_000)  # ready for another try
        page.screenshot(path=str(log_dir / "ui-api-down.png"))
        no_error_details(page)
    finally:
        ui.stop()


# Sign-in: the same ui against an api with auth on.

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def secured(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    yield from serve(redis_server, log_dir, AUTH="on", DEFAULT_MAX_TOKENS="32")  # short replies


@pytest.fixture(scope="module")
def secured_ui(secured: Stack, log_dir: Path) -> Iterator[Ui]:
    u = Ui(secured.env, log_dir)
    yield u
    u.stop()


def users(stack: Stack, *args: str, stdin: str | None = None) -> None:
    """`hearth users ARGS`, as an operator runs it (`passwd` reads the password from stdin)."""
    subprocess.run([sys.executable, "-m", "api.accounts.cli", "users", *args], env=stack.env, cwd=ROOT,
                   capture_output=True, text=True, input=stdin, check=True)


def add_user_with_password(stack: Stack, name: str) -> str:
    key = add_user(stack, name)
    users(stack, "passwd", name, stdin=f"{PASSWORD}\n")
    return key


def sign_in(page: Page, name: str, secret: str) -> None:
    expect(page.locator(SIGNIN)).to_be_visible()
    page.fill(USERNAME, name)
    page.fill(SECRET, secret)
    page.click(SIGN_IN)


def signed_in(page: Page, name: str) -> None:
    expect(page.locator(WHO)).to_have_text(f"Signed in as {name}", timeout=15_000)
    expect(page.locator(TEXTBOX)).to_be_visible()
    assert page.locator(SIGNIN).count() == 0


def status_tab_text(page: Page, job_id: str) -> str:
    """The Status tab's text once it lists `job_id` (the session's own job)."""
    page.get_by_role("tab", name="Status").click()
    expect(page.locator("#hearth-main")).to_contain_text(job_id, timeout=20_000)
    return page.inner_text("#hearth-main")


def recent_jobs(stack: Stack, key: str) -> list[str]:
    r = httpx.get(f"{stack.base_url}/status", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, r.text
    return [job["id"] for job in r.json()["recent"]]


def test_sign_in_with_a_password_then_chat(secured: Stack, secured_ui: Ui, new_page: Callable[[str], Page],
                                           log_dir: Path) -> None:
    key = add_user_with_password(secured, "dora")
    page = new_page(secured_ui.url)
    expect(page.locator(SIGNIN)).to_be_visible(timeout=15_000)
    assert page.locator(TEXTBOX).count() == 0  # no chat before signing in
    page.screenshot(path=str(log_dir / "ui-sign-in.png"))
    sign_in(page, "dora", PASSWORD)
    signed_in(page, "dora")
    expect(page.locator(SIGN_OUT)).to_be_visible()

    page.evaluate(RECORD_GROWTH)
    job_id = ask(page, secured_ui, "Write a short poem about snow.")
    lengths = page.evaluate("window.__lengths")
    assert "⚠️" not in page.inner_text("#hearth-main")
    assert len(lengths) >= 3 and lengths == sorted(lengths), f"the reply did not stream: lengths seen {lengths}"
    assert lengths[-1] == len(page.locator(BOT).first.inner_text().strip())  # the whole reply, a note after it or not
    assert job_status(secured, job_id, key) == "completed"  # the job is dora's: her key reads it
    page.screenshot(path=str(log_dir / "ui-signed-in-chat.png"))
    no_error_details(page)
    logs = secured_ui.proc.log() + secured.logs()
    assert PASSWORD not in logs and key not in logs


def test_sign_in_with_an_api_key_and_sign_out_clears_the_chat(secured: Stack, secured_ui: Ui,
                                                              new_page: Callable[[str], Page]) -> None:
    key = add_user(secured, "erin")
    add_user_with_password(secured, "frank")
    page = new_page(secured_ui.url)
    sign_in(page, "erin", key)
    signed_in(page, "erin")
    ask(page, secured_ui, "Name a fruit that is called kumquat.")
    expect(page.locator(BOT)).not_to_have_count(0)

    # Signing out while a reply waits its turn stops the reply: its job is cancelled.
    body = {"messages": [{"role": "user", "content": "Tell me about the sea."}], "stream": True,
            "max_tokens": 2000, "logit_bias": NO_END}
    with httpx.stream("POST", f"{secured.base_url}/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as blocker:
        lines = blocker.iter_lines()
        first_token(lines)  # the worker is busy until this stream closes
        known = len(secured_ui.job_ids())
        send(page, "Name another fruit.")
        waiting = wait_job_id(secured_ui, known)
        page.click(SIGN_OUT)
        expect(page.locator(SIGNIN_MESSAGE)).to_have_text("You have signed out.")
        page.reload()  # signed out stays signed out
        expect(page.locator(SIGNIN)).to_be_visible(timeout=15_000)
        wait_for(lambda: job_status(secured, waiting, key) == "cancelled", 15, f"job {waiting} to be cancelled", secured_ui.proc)
    assert '"msg": "POST /v1/logout 200"' in secured.logs()  # the api forgot the session's token
    assert page.locator(TEXTBOX).count() == 0
    sign_in(page, "frank", PASSWORD)  # someone else at the same browser
    signed_in(page, "frank")
    assert page.locator(BOT).count() == 0 and "kumquat" not in page.inner_text("body")
    assert secured_ui.proc.log().count('"signed in"') >= 2 and key not in secured_ui.proc.log()


def test_wrong_password_shows_why_and_no_chat(secured: Stack, secured_ui: Ui, new_page: Callable[[str], Page],
                                              log_dir: Path) -> None:
    add_user_with_password(secured, "gus")
    other_key = add_user(secured, "hana")
    page = new_page(secured_ui.url)
    for name, secret in (("gus", "wrong password"), ("nobody", PASSWORD), ("gus", other_key)):
        sign_in(page, name, secret)
        expect(page.locator(SECRET)).to_have_value("", timeout=15_000)  # answered; to be typed again
        expect(page.locator(SIGNIN_MESSAGE)).to_have_text("⚠️ Unknown user or wrong password.")
    sign_in(page, "gus", "")
    expect(page.locator(SIGNIN_MESSAGE)).to_have_text("⚠️ Enter your user name and your API key or password.")
    page.screenshot(path=str(log_dir / "ui-sign-in-refused.png"))
    assert page.locator(TEXTBOX).count() == 0 and page.locator(WHO).count() == 0
    no_error_details(page)


@pytest.mark.timeout(600)  # two replies
def test_users_see_only_their_own_chat_and_jobs(secured: Stack, secured_ui: Ui, new_page: Callable[[str], Page]) -> None:
    alice_key, bob_key = add_user(secured, "alice"), add_user_with_password(secured, "bob")
    alice, bob = new_page(secured_ui.url), new_page(secured_ui.url)  # two browsers, two sessions
    sign_in(alice, "alice", alice_key)
    sign_in(bob, "bob", PASSWORD)
    signed_in(alice, "alice")
    signed_in(bob, "bob")

    alice_job = ask(alice, secured_ui, "My dog is called Biscuit. Say hello to him.")
    bob_job = ask(bob, secured_ui, "Name one colour.")
    assert "Biscuit" in alice.inner_text("body")
    assert "Biscuit" not in bob.inner_text("body")

    # The api lists each user's own jobs; the Status tabs show the same.
    assert alice_job in recent_jobs(secured, alice_key) and bob_job not in recent_jobs(secured, alice_key)
    assert bob_job in recent_jobs(secured, bob_key) and alice_job not in recent_jobs(secured, bob_key)
    assert bob_job not in status_tab_text(alice, alice_job)
    assert alice_job not in status_tab_text(bob, bob_job)
    assert "Biscuit" not in bob.inner_text("body")


def test_revoked_user_is_sent_back_to_sign_in(secured: Stack, secured_ui: Ui, new_page: Callable[[str], Page],
                                              log_dir: Path) -> None:
    key = add_user(secured, "ivy")
    page = new_page(secured_ui.url)
    sign_in(page, "ivy", key)
    signed_in(page, "ivy")
    users(secured, "revoke", "ivy")
    send(page, "Are you there?")  # the api answers 401: no job, no reply
    expect(page.locator(SIGNIN_MESSAGE)).to_have_text("⚠️ Your session has ended — please sign in again.", timeout=15_000)
    assert page.locator(TEXTBOX).count() == 0
    page.screenshot(path=str(log_dir / "ui-session-ended.png"))
    no_error_details(page)

    key = add_user(secured, "ivy")  # back, with a new key: a fresh, empty chat
    sign_in(page, "ivy", key)
    signed_in(page, "ivy")
    assert page.locator(BOT).count() == 0 and "Are you there?" not in page.inner_text("body")


def test_batch_tab_runs_a_prompt_file_and_offers_the_answers(ui: Ui, stack: Stack, open_page: Callable[[str], Page], tmp_path: Path, log_dir: Path) -> None:
    prompts = tmp_path / "questions.txt"
    prompts.write_text("Say yes.\n\nName a fruit.\nSay no.\n")
    page = open_page(ui.url)
    page.get_by_role("tab", name="Batch").click()
    page.locator("#hearth-batch-file input[type=file]").set_input_files(str(prompts))
    type_number(page, "#hearth-batch-max-tokens input", "6")
    page.click("#hearth-batch-start")
    expect(page.locator("#hearth-batch-message")).to_contain_text("Started batch_", timeout=30_000)
    batch_id = page.locator("#hearth-batch-message").inner_text().split("Started ")[1].rstrip(".").strip()
    # This batch's row: the suite's shared stack has run other batches of this user before.
    row = page.locator("#hearth-batches tr", has_text=batch_id)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("completed", timeout=REPLY_S * 1000)  # the tab polls while open
    expect(row).to_contain_text("100%")
    expect(page.locator("#hearth-batch-chosen input")).to_have_value(batch_id)  # the batch just started is chosen
    page.click("#hearth-batch-download")
    results = page.locator("#hearth-batch-results")
    csv_link = results.locator(f'a[href$="/{batch_id}.csv"]')
    try:
        expect(csv_link).to_have_count(1, timeout=30_000)
    except AssertionError as exc:  # say what the tab said instead
        page.screenshot(path=str(log_dir / "ui-batch-download.png"), full_page=True)
        notes = [page.locator(f"#hearth-batch-{n}").inner_text() for n in ("message", "polling")]
        raise AssertionError(f"{exc}\nthe tab's notes: {notes}") from None
    expect(results.locator(f'a[href$="/{batch_id}.jsonl"]')).to_have_count(1)
    # Read as CSV: an answer may hold commas, quotes and line breaks (the model's text is free).
    table_rows = list(csv.reader(io.StringIO(httpx.get(str(csv_link.get_attribute("href")), timeout=10).text)))
    assert table_rows[0] == ["custom_id", "prompt", "answer"] and [r[:2] for r in table_rows[1:]] == [
        ["line-1", "Say yes."], ["line-3", "Name a fruit."], ["line-4", "Say no."]]
    body = httpx.get(f"{stack.base_url}/batches/{batch_id}", timeout=5).json()
    assert body["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    answers = httpx.get(f"{stack.base_url}/files/{body['output_file_id']}/content", timeout=5).text.splitlines()
    assert sorted(json.loads(a)["custom_id"] for a in answers) == ["line-1", "line-3", "line-4"]


# Each Vega plot of the Status tab (drawn as SVG), by its title: axis titles and labels, legend
# entries, and how many points it draws.
STATUS_PLOTS = """() => Object.fromEntries([...document.querySelectorAll('#hearth-main svg')]
  .filter(svg => svg.querySelector('.role-title-text')).map(svg => {
    const texts = selector => [...svg.querySelectorAll(selector)].map(t => t.textContent);
    return [texts('.role-title-text text')[0], {
      axes: texts('.role-axis-title text'),
      x: texts('.role-axis[aria-label^="X-axis"] .role-axis-label text'),
      y: texts('.role-axis[aria-label^="Y-axis"] .role-axis-label text'),
      legend: svg.querySelector('.role-legend')?.getAttribute('aria-label'),  // names each entry in full
      entries: texts('.role-legend-label text'),
      points: svg.querySelectorAll('.mark-symbol path').length}];
  }))"""
DEPTH, SPEED, FIRST = "Waiting jobs (last hour)", "Generation speed (last hour)", "Time to first token (last hour)"


def afternoon_zone() -> ZoneInfo:
    """A time zone where it is afternoon now: there a 12-hour clock would read 01:15, not 13:15,
    and the last hour does not cross midnight."""
    zones = ("America/Los_Angeles", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo", "Pacific/Auckland")
    return next(zone for zone in map(ZoneInfo, zones) if 13 <= datetime.now(zone).hour <= 22)


def test_status_plots_name_their_units_queues_and_local_times(ui: Ui, stack: Stack, new_page: Callable[..., Page], log_dir: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    assert httpx.post(f"{stack.base_url}/chat/completions", json=chat, timeout=REPLY_S).status_code == 200
    queues = list(httpx.get(f"{stack.base_url}/status", timeout=10).json()["queues"])
    zone = afternoon_zone()
    page = new_page(ui.url, timezone=zone.key)  # the browser draws times in its own zone
    page.get_by_role("tab", name="Status").click()
    # The plots are redrawn at each refresh: one snapshot, taken once every queue is in the legend.
    legend_end = f" {len(queues)} values: {', '.join(queues)}"
    try:
        plots = page.wait_for_function(
            f"() => {{ const plots = ({STATUS_PLOTS})(); return plots['{SPEED}']?.points > 0 && plots['{DEPTH}']?.legend?.endsWith("
            f"{json.dumps(legend_end)}) && plots['{DEPTH}'].entries.length === {len(queues)} && plots; }}", timeout=30_000).json_value()
    except PlaywrightError as exc:  # say what the plots showed instead
        raise AssertionError(f"{exc}\nthe plots: {page.evaluate(STATUS_PLOTS)}, expected the queues {queues}") from None
    finally:
        page.screenshot(path=str(log_dir / "ui-status.png"))

    # Each axis names its unit; the queues' legend lists them by name (above), single series have none.
    assert {title: plot["axes"] for title, plot in plots.items()} == {
        DEPTH: ["local time", "jobs waiting"], SPEED: ["local time", "tokens/s"], FIRST: ["local time", "seconds"]}
    assert plots[SPEED]["legend"] is plots[FIRST]["legend"] is None
    jobs = httpx.get(f"{stack.base_url}/status", timeout=10).json()["series"]["jobs"]  # all ended before the snapshot
    for title, field in ((SPEED, "tokens_per_s"), (FIRST, "ttft_s")):  # a point per job measured
        assert plots[title]["points"] == sum(job[field] is not None for job in jobs) > 0
    # Times are the browser's local time on a 24-hour clock, over the last hour.
    now = time.time()
    first, last = (datetime.fromtimestamp(t, zone).strftime("%H:%M") for t in (now - SPAN_S - 60, now + 120))
    for title, plot in plots.items():
        assert plot["y"], f"{title}: no y labels"
        assert plot["x"] and all(re.fullmatch(r"\d\d:\d\d", x) and first <= x <= last for x in plot["x"]), (
            f"{title}: x labels {plot['x']}, expected {first}..{last} ({zone.key})")


def test_the_status_tab_shows_once_in_the_tab_bar(ui: Ui, new_page: Callable[..., Page]) -> None:
    """Regression: the tab bar read "Chat, Batch, Status, Status" once the tab was opened (a
    component made between two tabs counted as one of the bar's children)."""
    page = new_page(ui.url)
    page.wait_for_selector(TEXTBOX)
    page.get_by_role("tab", name="Status").click()
    expect(page.locator("#hearth-main")).to_contain_text("Workers:")  # the tab is open and refreshed
    assert page.get_by_role("tab").all_inner_texts() == ["Chat", "Batch", "Status", "Shared", "Account"]  # no accounts, no Admin


# The events (their `fn_index`) that a timer's tick triggers to fill a plot: the Status tab's refreshes.
PLOT_TICKS = """() => { const config = window.gradio_config;
  const ids = kind => new Set(config.components.filter(c => c.type.endsWith(kind)).map(c => c.id));
  const timers = ids('timer'), plots = ids('plot');
  return config.dependencies.filter(d => d.targets.some(([id, e]) => timers.has(id) && e === 'tick')
    && d.outputs.some(id => plots.has(id))).map(d => d.id); }"""


def test_the_status_tab_draws_its_points_on_the_refresh_that_opens_it(ui: Ui, stack: Stack, new_page: Callable[..., Page]) -> None:
    """Regression: the refresh that opens the tab set the plots' axes but drew no point; they came
    only with the next refresh, `REFRESH_S` later. Here the timer's refreshes never reach the ui,
    so only the tab's opening can draw them."""
    chat = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    assert httpx.post(f"{stack.base_url}/chat/completions", json=chat, timeout=REPLY_S).status_code == 200
    page = new_page(ui.url)
    page.wait_for_selector(TEXTBOX)
    ticks = set(page.evaluate(PLOT_TICKS))
    assert ticks, "the Status tab's timer fills no plot"

    def hold_ticks(route: Route) -> None:  # a tick's request stays unanswered: a failed one would reload the page
        if (route.request.post_data_json or {}).get("fn_index") not in ticks:
            route.continue_()

    page.route("**/gradio_api/queue/join*", hold_ticks)
    page.get_by_role("tab", name="Status").click()
    drawn = f"() => {{ const p = ({STATUS_PLOTS})(); return p['{SPEED}']?.points > 0 && p['{FIRST}']?.points > 0 && p['{DEPTH}']?.entries.length > 0; }}"
    try:  # two refresh periods and more: a tick comes (and is held) in the meantime
        page.wait_for_function(drawn, timeout=3 * REFRESH_S * 1000)
    except PlaywrightError as exc:
        raise AssertionError(f"{exc}\nthe plots: {page.evaluate(STATUS_PLOTS)}") from None
    expect(page.locator("#hearth-main")).to_contain_text("Workers:")


# Conversations: the sidebar, and nothing lost on a reload or a switch.

CHATBOT = "#hearth-chatbot"
ROWS = "#hearth-conversations label"
NEW_CHAT = "#hearth-new-chat"
SEARCH = "#hearth-search input"
TITLE = "#hearth-title input"
MAX_TOKENS = "#hearth-max-tokens input"


def row(page: Page, text: str):
    return page.locator(ROWS, has_text=text)


# Two animation frames: Gradio renders a closed section's fields when it first opens and gives
# them the updates that came while it was closed a frame after they show (what was typed in
# between is lost): then they are the page's.
TWO_FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))"


def this_chat(page: Page) -> None:
    """Opens the sidebar's "This chat" section (title, delete, settings) if it is closed."""
    if not page.locator(TITLE).is_visible():
        page.locator("#hearth-this-chat").get_by_text("This chat").click()
    expect(page.locator(TITLE)).to_be_visible()
    page.evaluate(TWO_FRAMES)


def type_number(page: Page, field: str, value: str) -> None:
    """A number is the page's once its field is left, as a person's click elsewhere leaves it."""
    page.fill(field, value)
    page.locator(field).blur()
    expect(page.locator(field)).to_have_value(value)


def api(stack: Stack, key: str, path: str) -> httpx.Response:
    return httpx.get(f"{stack.base_url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def stored(stack: Stack, key: str, conv_id: str) -> list[dict[str, object]]:
    return api(stack, key, f"/conversations/{conv_id}/items?order=asc").json()["data"]


def shows_the_end_of(page: Page, said: str) -> bool:
    """Whether the chat shows the answer's last words. Compared by letters only: the page renders
    the answer's Markdown, which drops or adds punctuation, spacing and list numbers."""
    def words(text: str) -> list[str]:
        return re.findall(r"[^\W\d_]+", text)
    return " ".join(words(said)[-4:]) in " ".join(words(page.inner_text(CHATBOT)))


@pytest.mark.timeout(600)  # a long answer, followed four times
def test_a_reload_or_a_switch_mid_answer_loses_nothing(secured: Stack, secured_ui: Ui, new_page: Callable[..., Page]) -> None:
    key, neighbour = add_user(secured, "kai"), add_user(secured, "kai-neighbour")
    page = new_page(secured_ui.url)
    sign_in(page, "kai", key)
    signed_in(page, "kai")
    ask(page, secured_ui, "Name a colour.")
    expect(row(page, "Name a colour.")).to_have_count(1)
    # The settings' section is open before the new chat is shown: a field mounted as its section
    # first opens may still take the new chat's (empty) setting after something is typed in it.
    this_chat(page)
    page.click(NEW_CHAT)
    # The new chat is shown with its settings, then its input is made ready: a setting is typed after both.
    expect(page.locator(CHATBOT)).not_to_contain_text("Name a colour.")
    expect(page.locator(TEXTBOX)).to_be_editable()
    type_number(page, MAX_TOKENS, "400")  # this chat's own setting, longer than the api's default of 32
    known = len(secured_ui.job_ids())
    # A neighbour's long chat holds the worker: kai's answer waits in line for as long as the
    # test needs, whatever the machine's speed, while the page is reloaded and switched.
    body = {"messages": [{"role": "user", "content": "Tell me about the sea."}], "stream": True, "max_tokens": 2000, "logit_bias": NO_END}
    with httpx.stream("POST", f"{secured.base_url}/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {neighbour}"}) as blocker:
        lines = blocker.iter_lines()
        first_token(lines)
        send(page, "Write a very long story about a dragon who guards a library, in many chapters.")
        job_id = wait_job_id(secured_ui, known)
        expect(page.locator(BOT).last).to_contain_text("#1 in line")

        page.reload()
        signed_in(page, "kai")  # the session survived the reload
        expect(page.locator(CHATBOT)).to_contain_text("dragon who guards a library")
        wait_for(lambda: secured_ui.resumed(job_id) == 1, 30, "the ui to follow the answer again", secured_ui.proc)
        expect(page.locator(BOT).last).to_contain_text("#1 in line")  # its place in line, followed again

        row(page, "Name a colour.").click()  # another conversation, and back
        expect(page.locator(CHATBOT)).not_to_contain_text("dragon")
        expect(page.locator(CHATBOT)).to_contain_text("Name a colour.")
        row(page, "dragon").click()
        wait_for(lambda: secured_ui.resumed(job_id) == 2, 30, "the ui to follow the answer again", secured_ui.proc)
        expect(page.locator(BOT).last).to_contain_text("#1 in line")
        assert job_status(secured, job_id, key) == "queued"
    # Closing the neighbour's stream cancels that chat: kai's answer runs, and is reloaded mid-way.
    wait_for(lambda: job_status(secured, job_id, key) == "running", 60, "the answer to start")
    expect(page.locator(BOT).last).not_to_contain_text("in line")
    expect(page.locator(BOT).last).not_to_have_text("")
    page.reload()
    signed_in(page, "kai")
    wait_for(lambda: secured_ui.resumed(job_id) == 3, 30, "the ui to follow the answer again", secured_ui.proc)

    wait_for(lambda: job_status(secured, job_id, key) == "completed", REPLY_S, "the answer to end", secured_ui.proc)
    [conv] = [c for c in api(secured, key, "/conversations").json()["data"] if "dragon" in c["metadata"]["title"]]
    assert conv["metadata"]["max_tokens"] == "400"
    wait_for(lambda: len(stored(secured, key, conv["id"])) == 2, 30, "the answer to be stored")
    question, answer = stored(secured, key, conv["id"])
    said = "".join(json.loads(e.data)["text"] for e in job_events(secured.base_url, job_id, api_key=key) if e.event == "token")
    assert question["role"] == "user" and answer["role"] == "assistant" and answer["status"] == "completed"
    assert answer["content"][0]["text"] == said  # stored whole, once  # type: ignore[index]
    wait_for(lambda: shows_the_end_of(page, said), 30, "the page to show the answer to its end")
    wait_for(lambda: api(secured, key, f"/conversations/{conv['id']}").json()["hearth_job_id"] is None, 30, "no answer in progress")

    page.reload()  # the finished answer comes from the store now
    signed_in(page, "kai")
    wait_for(lambda: shows_the_end_of(page, said), 30, "the page to show the stored answer")
    assert secured_ui.resumed(job_id) == 3
    no_error_details(page)


@pytest.mark.timeout(600)  # two replies
def test_rename_search_delete_and_nobody_else_sees_them(secured: Stack, secured_ui: Ui, new_page: Callable[..., Page],
                                                      tmp_path: Path, log_dir: Path) -> None:
    key, other_key = add_user(secured, "lena"), add_user(secured, "milo")
    page = new_page(secured_ui.url)
    sign_in(page, "lena", key)
    signed_in(page, "lena")
    ask(page, secured_ui, "Name a fruit.")
    ask(page, secured_ui, "Name another one.")  # the same conversation
    [fruit] = api(secured, key, "/conversations").json()["data"]
    wait_for(lambda: len(stored(secured, key, fruit["id"])) == 4, 30, "the second answer to be stored")
    first_answer = stored(secured, key, fruit["id"])[3]
    first_turn = [i["id"] for i in stored(secured, key, fruit["id"])[:2]]
    deletions = secured.api.log().count("DELETE /v1/conversations/")

    # Regenerate the last answer, then edit the last question and resend: the server's copy
    # follows the page (the old answer, then the old question, replaced by one request each).
    jobs, ended = len(secured_ui.job_ids()), secured_ui.replies_ended()
    page.locator(CHATBOT).get_by_role("button", name="Retry").last.click()
    wait_for(lambda: secured_ui.replies_ended() > ended, REPLY_S, "the regenerated reply", secured_ui.proc)
    expect(page.locator(SUBMIT)).to_be_visible(timeout=10_000)
    wait_for(lambda: len(stored(secured, key, fruit["id"])) == 4 and stored(secured, key, fruit["id"])[3]["id"] != first_answer["id"],
             30, "the new answer to be stored")
    assert [i["content"][0]["text"] for i in stored(secured, key, fruit["id"])][::2] == ["Name a fruit.", "Name another one."]
    regenerated = stored(secured, key, fruit["id"])
    assert [i["id"] for i in regenerated[:2]] == first_turn and regenerated[3]["status"] == "completed"
    wait_for(lambda: shows_the_end_of(page, regenerated[3]["content"][0]["text"]), 30, "the page to show the stored answer")
    ended = secured_ui.replies_ended()
    page.locator(CHATBOT).get_by_role("button", name="Edit").last.click()
    page.fill(f"{CHATBOT} textarea.edit-textarea", "Name a berry.")
    page.locator(CHATBOT).get_by_role("button", name="Submit").click()
    wait_for(lambda: secured_ui.replies_ended() > ended, REPLY_S, "the edited turn's reply", secured_ui.proc)
    expect(page.locator(SUBMIT)).to_be_visible(timeout=10_000)  # the answer's last update (the list, fetched then) is in
    wait_for(lambda: [i["role"] for i in stored(secured, key, fruit["id"])] == ["user", "assistant"] * 2
             and stored(secured, key, fruit["id"])[2]["content"][0]["text"] == "Name a berry.", 30, "the edited turn to be stored")
    assert len(secured_ui.job_ids()) == jobs + 2
    expect(page.locator(CHATBOT)).not_to_contain_text("Name another one.")
    edited = stored(secured, key, fruit["id"])
    assert [i["id"] for i in edited[:2]] == first_turn and edited[3]["status"] == "completed"
    sent = Job.fetch(secured_ui.job_ids()[-1], connection=secured.redis, serializer=RQ_SERIALIZER).args[0]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [(i["role"], i["content"][0]["text"]) for i in edited[:3]]
    assert secured.api.log().count("DELETE /v1/conversations/") == deletions  # one request each, no deletions
    assert fruit["metadata"]["title"] == "Name a fruit."  # titled after its first message
    this_chat(page)
    page.fill(TITLE, "Zebra notes")
    page.click("#hearth-rename")
    expect(row(page, "Zebra notes")).to_have_count(1)
    assert api(secured, key, f"/conversations/{fruit['id']}").json()["metadata"]["title"] == "Zebra notes"

    page.click(NEW_CHAT)
    expect(page.locator(BOT)).to_have_count(0)
    ask(page, secured_ui, "Name a vegetable.")
    expect(page.locator(ROWS)).to_have_count(2)
    expect(page.locator(ROWS).first).to_contain_text("Name a vegetable.")  # newest first
    page.fill(SEARCH, "zebra")  # in no message: only the title matches
    expect(page.locator(ROWS)).to_have_count(1)
    expect(page.locator(ROWS)).to_have_text("Zebra notes")
    page.fill(SEARCH, "")
    expect(page.locator(ROWS)).to_have_count(2)

    other = new_page(secured_ui.url)  # another person, another browser
    sign_in(other, "milo", other_key)
    signed_in(other, "milo")
    expect(other.locator(ROWS)).to_have_count(0)
    assert "Zebra notes" not in other.inner_text("body") and "vegetable" not in other.inner_text("body")
    assert api(secured, other_key, f"/conversations/{fruit['id']}").status_code == 404

    phone = new_page(secured_ui.url, 390, 844)  # lena's phone: the sidebar folds away, the input stays in reach
    sign_in(phone, "lena", key)
    signed_in(phone, "lena")
    expect(phone.locator(ROWS)).to_have_count(2)  # her conversations, from the api; a new chat is open
    expect(phone.locator("#hearth-sidebar")).not_to_have_class(re.compile(r"\bopen\b"))
    expect(phone.locator(TEXTBOX)).to_be_in_viewport()
    expect(phone.locator(ROWS).first).not_to_be_in_viewport()
    phone.fill(TEXTBOX, "typed on a phone")  # reachable: nothing covers it
    for shot in (tmp_path / "ui-phone.png", log_dir / "ui-phone.png"):
        phone.screenshot(path=str(shot))
    phone.locator("#hearth-sidebar .toggle-button").click()  # the conversations are one tap away
    expect(row(phone, "Zebra notes")).to_be_in_viewport()
    phone.screenshot(path=str(log_dir / "ui-phone-sidebar.png"))
    assert (tmp_path / "ui-phone.png").stat().st_size > 10_000

    row(page, "Zebra notes").click()
    expect(page.locator(CHATBOT)).to_contain_text("Name a berry.")
    this_chat(page)
    page.click("#hearth-delete")
    expect(page.locator(ROWS)).to_have_count(1)
    expect(page.locator(BOT)).to_have_count(0)
    assert api(secured, key, f"/conversations/{fruit['id']}").status_code == 404
    no_error_details(page)


EXPORT_ALL, EXPORT_CHAT, IMPORT, IMPORTED = "#hearth-export-all", "#hearth-export-chat", "#hearth-import", "#hearth-import-result"
SYSTEM_PROMPT = "#hearth-system textarea"


def all_chats(page: Page) -> None:
    """Opens the sidebar's "All chats" section (export, import) if it is closed."""
    if not page.locator(EXPORT_ALL).is_visible():
        page.locator("#hearth-all-chats").get_by_text("All chats").click()
    expect(page.locator(EXPORT_ALL)).to_be_visible()


def download(page: Page, button: str, folder: Path) -> Path:
    with page.expect_download() as got:
        page.click(button)
    saved = folder / got.value.suggested_filename
    got.value.save_as(saved)
    return saved


def upload(page: Page, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click(IMPORT)
    chooser.value.set_files(path)


def test_defaults_for_new_chats_and_export_then_import(secured: Stack, secured_ui: Ui, new_page: Callable[..., Page],
                                                       tmp_path: Path) -> None:
    key = add_user(secured, "noor")
    noor = openai.OpenAI(base_url=secured.base_url, api_key=key, max_retries=0, timeout=30)
    said = [{"type": "message", "role": "user", "content": "What is *AOF*?"},
            {"type": "message", "role": "assistant", "content": "Redis's append-only file."}]
    aof = noor.conversations.create(items=said)
    picnic = noor.conversations.create(items=[{"type": "message", "role": "user", "content": "Plan a picnic."}],
                                       metadata={"title": "Picnic"})
    page = new_page(secured_ui.url)
    sign_in(page, "noor", key)
    signed_in(page, "noor")
    expect(page.locator(ROWS)).to_have_count(2)
    # The settings are opened first and typed in once the new chat is set up (the input is
    # ready): a setting typed before that, or as its section first opens, may be emptied.
    this_chat(page)
    expect(page.locator(TEXTBOX)).to_be_editable(timeout=30_000)

    # The settings of the open (new) chat become noor's defaults: every new chat starts with
    # them, on any device; a conversation keeps its own.
    page.fill(SYSTEM_PROMPT, "Answer like a pirate.")
    type_number(page, MAX_TOKENS, "64")
    expect(page.locator(SYSTEM_PROMPT)).to_have_value("Answer like a pirate.")
    page.click("#hearth-save-defaults")
    expect(page.locator(TOAST)).to_contain_text("New chats will start with these settings.")
    assert api(secured, key, "/conversations/defaults").json()["metadata"] == {"system": "Answer like a pirate.", "max_tokens": "64"}
    row(page, "Picnic").click()
    expect(page.locator(CHATBOT)).to_contain_text("Plan a picnic.")
    expect(page.locator(SYSTEM_PROMPT)).to_have_value("")
    page.click(NEW_CHAT)
    expect(page.locator(SYSTEM_PROMPT)).to_have_value("Answer like a pirate.")
    expect(page.locator(MAX_TOKENS)).to_have_value("64")
    laptop = new_page(secured_ui.url)
    sign_in(laptop, "noor", key)
    signed_in(laptop, "noor")
    this_chat(laptop)
    expect(laptop.locator(SYSTEM_PROMPT)).to_have_value("Answer like a pirate.")

    # Export all (the file import takes) and one chat as Markdown, saved by the browser.
    all_chats(page)
    exported = download(page, EXPORT_ALL, tmp_path)
    assert exported.name == "hearth-conversations.json"
    assert [c["id"] for c in json.loads(exported.read_text())["conversations"]] == [picnic.id, aof.id]
    row(page, "AOF").click()
    expect(page.locator(CHATBOT)).to_contain_text("append-only file")
    this_chat(page)
    markdown = download(page, EXPORT_CHAT, tmp_path)
    assert markdown.name == "What is AOF.md"
    assert markdown.read_text().startswith("# What is *AOF*?\n") and "Redis's append-only file." in markdown.read_text()

    # Deleted, then brought back by importing the export; importing it again adds nothing.
    page.click("#hearth-delete")
    expect(page.locator(ROWS)).to_have_count(1)
    all_chats(page)
    upload(page, exported)
    expect(page.locator(IMPORTED)).to_have_text("Imported 2 conversations: 1 new, 2 messages added.")
    expect(page.locator(ROWS)).to_have_count(2)
    row(page, "AOF").click()
    expect(page.locator(CHATBOT)).to_contain_text("append-only file")
    upload(page, exported)
    expect(page.locator(IMPORTED)).to_have_text("Imported 2 conversations: 0 new, 0 messages added.")
    expect(page.locator(ROWS)).to_have_count(2)
    assert [i["content"][0]["text"] for i in stored(secured, key, aof.id)] == [m["content"] for m in said]

    not_an_export = tmp_path / "notes.json"
    not_an_export.write_text('{"notes": ["milk"]}')
    upload(page, not_an_export)
    expect(page.locator(IMPORTED)).to_contain_text("⚠️")
    expect(page.locator(ROWS)).to_have_count(2)
    no_error_details(page, notes=("New chats will start with these settings.",))
    kept = [p for p in secured_ui.data.rglob("*") if p.is_file() and p.name != KEY_FILE]
    assert not any(b"append-only" in p.read_bytes() for p in kept), kept  # the ui's disk keeps nobody's chats


@pytest.mark.timeout(600)  # its own Redis, worker, api and ui, each started twice; four replies
def test_restarting_everything_or_losing_a_worker_loses_no_conversation(log_dir: Path, new_page: Callable[..., Page]) -> None:
    own = RedisServer(log_dir)
    stack = Stack(own, 0, log_dir, AUTH="on", DEFAULT_MAX_TOKENS="16")
    ui: Ui | None = None
    try:
        stack.start_worker()
        stack.start_api()
        ui = Ui(stack.env, log_dir)
        key = add_user(stack, "ines")
        page = new_page(ui.url)
        sign_in(page, "ines", key)
        signed_in(page, "ines")
        ask(page, ui, "Name a bird.")
        [conv] = api(stack, key, "/conversations").json()["data"]
        wait_for(lambda: len(stored(stack, key, conv["id"])) == 2, 30, "the answer to be stored")
        before = stored(stack, key, conv["id"])

        ui.proc.stop()
        stack.stop()
        own.stop()  # Redis writes its append-only file as it goes: a stop loses nothing
        own.start()
        stack.start_api()
        stack.start_worker()
        ui.start()

        page.reload()
        signed_in(page, "ines")  # the session (in Redis) and the ui's key to the browser's copy outlived it
        expect(row(page, "Name a bird.")).to_have_count(1)
        wait_for(lambda: shows_the_end_of(page, before[1]["content"][0]["text"]), 30, "the open conversation, open again")
        assert stored(stack, key, conv["id"]) == before

        again = new_page(ui.url)  # another browser signs in anew and finds it too, and goes on with it
        sign_in(again, "ines", key)
        signed_in(again, "ines")
        this_chat(again)  # open before the conversation is: its settings land in fields shown
        row(again, "Name a bird.").click()
        expect(again.locator(CHATBOT)).to_contain_text("Name a bird.")
        ask(again, ui, "And a fish?")
        wait_for(lambda: len(stored(stack, key, conv["id"])) == 4, 30, "the new turn to be stored")
        assert stored(stack, key, conv["id"])[:2] == before

        # The worker dies mid-answer: the page says so in words, the answer is kept as far as it
        # got, and a worker started again serves the next turn.
        expect(again.locator(TEXTBOX)).to_be_editable()  # the last answer's updates have landed: none empties what is typed
        type_number(again, MAX_TOKENS, "400")
        known = len(ui.job_ids())
        send(again, "Write a very long story about a dragon who guards a library, in many chapters.")
        job_id = wait_job_id(ui, known)
        wait_for(lambda: any(json.loads(f[b"event"])["type"] == "token" for _, f in stack.redis.xrange(events_key(job_id))),
                 60, "the answer's first words")
        stack.workers[-1].stop(signal.SIGKILL)
        expect(again.locator(BOT).last).to_contain_text("The worker serving this request stopped; please retry.", timeout=30_000)
        wait_for(lambda: len(stored(stack, key, conv["id"])) == 6, 30, "the answer so far to be stored")
        assert stored(stack, key, conv["id"])[5]["status"] == "incomplete"
        stack.start_worker()
        expect(again.locator(TEXTBOX)).to_be_editable()
        type_number(again, MAX_TOKENS, "8")
        ask(again, ui, "Are you back?")
        wait_for(lambda: len(stored(stack, key, conv["id"])) == 8, 30, "the next turn to be stored")
        no_error_details(again)
    finally:
        if ui is not None:
            ui.stop()
        stack.stop()
        own.stop()


# Untrusted text: a message shows, it makes the browser fetch nothing.

class Listener:
    """A real address a leaked conversation would reach: records the path of every request."""

    def __init__(self) -> None:
        paths: list[str] = []
        self.paths = paths

        class Record(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Record)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Listener":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# What a message may make on the page: nothing that fetches (Gradio's own buttons are outside the messages).
FETCHERS = "img, iframe, video, audio, source, picture, object, embed, link, meta, style, input, image, frame"


def test_untrusted_text_fetches_nothing_and_shows_images_as_links(ui: Ui, stack: Stack, open_page: Callable[[str], Page],
                                                                  log_dir: Path) -> None:
    with Listener() as listener:
        text = hostile_text(listener.base)
        items = [{"type": "message", "role": "user", "content": text},
                 {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}]
        title = f"Hostile <img src='{leak_url(listener.base, 'TITLE')}'>"
        created = httpx.post(f"{stack.base_url}/conversations", json={"items": items, "metadata": {"title": title}}, timeout=10)
        assert created.status_code == 200, created.text
        page = open_page(ui.url)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        row(page, "Hostile").click()

        md_image = leak_url(listener.base, "MD")
        for message in (page.locator('[data-testid="user"]').last, page.locator(BOT).last):
            link = message.get_by_role("link", name=f'Image "t": {md_image}', exact=True)
            expect(link).to_be_visible()  # the image, as a link showing its address
            expect(link).to_have_attribute("href", md_image)
            expect(message).to_contain_text(f"<img src='{leak_url(listener.base, 'HTML')}'>")  # raw HTML, as its text
            assert message.locator(FETCHERS).count() == 0, message.inner_html()
        page.screenshot(path=str(log_dir / "ui-untrusted-text.png"), full_page=True)

        # A question shown while its answer streams (the same rendering as a streamed answer's).
        page.click(NEW_CHAT)
        expect(page.locator(BOT)).to_have_count(0)  # the new chat shown (its input is ready after)
        asked = leak_url(listener.base, "ASKED")
        ask(page, ui, f"Say yes to ![q]({asked}) and <img src='{asked}-HTML'>.")
        expect(page.locator('[data-testid="user"]').last.get_by_role("link", name=f'Image "q": {asked}', exact=True)).to_be_visible()

        # One request the test makes from the page, after all the page did: once it has arrived,
        # any request for a message's address would have too.
        page.evaluate(f"fetch('{listener.base}/control', {{mode: 'no-cors'}}).catch(() => null)")
        wait_for(lambda: "/control" in listener.paths, 30, "the page's control request to reach the listener")
        assert listener.paths == ["/control"]
        assert [url for url in requested if url.startswith(listener.base)] == [f"{listener.base}/control"]
        no_error_details(page)


# The model picker: the models workers serve, which answer at once, and a conversation's choice kept.

MODEL_PICKER = "#hearth-model input"


@pytest.mark.timeout(600)  # its own stack and ui; two replies, one model loaded on the way
def test_a_conversation_on_a_second_model_keeps_its_choice(make_stack: Callable[..., Stack], mistral_tiny: str,
                                                           new_page: Callable[..., Page], log_dir: Path) -> None:
    s, worker = two_model_stack(make_stack, mistral_tiny)
    models_ui = Ui(s.env, log_dir)
    try:
        page = new_page(models_ui.url)
        page.wait_for_selector(TEXTBOX)
        this_chat(page)
        expect(page.locator(MODEL_PICKER)).to_have_value("The server's default")
        page.locator(MODEL_PICKER).click()
        expect(page.get_by_role("option")).to_contain_text(["The server's default", f"{MODEL} · loaded", f"{MISTRAL} · loads first"])
        readme_shot(page, "model-picker", log_dir)
        page.get_by_role("option", name=f"{MISTRAL} · loads first").click()
        expect(page.locator(MODEL_PICKER)).to_have_value(f"{MISTRAL} · loads first")

        job_id = ask(page, models_ui, "Say hi.")
        assert answered_by(worker, job_id) == MISTRAL
        [conv] = httpx.get(f"{s.base_url}/conversations", timeout=10).json()["data"]
        assert conv["metadata"]["model"] == MISTRAL
        expect(page.locator(MODEL_PICKER)).to_have_value(f"{MISTRAL} · loaded")  # SmolLM2 made room for it

        # The person's default for new chats; a conversation keeps its own.
        page.click("#hearth-save-defaults")
        expect(page.locator(TOAST)).to_contain_text("New chats will start with these settings.")
        assert httpx.get(f"{s.base_url}/conversations/defaults", timeout=10).json()["metadata"] == {"model": MISTRAL}
        page.click(NEW_CHAT)
        expect(page.locator(MODEL_PICKER)).to_have_value(f"{MISTRAL} · loaded")
        page.locator(MODEL_PICKER).click()
        page.get_by_role("option", name=f"{MODEL} · loads first").click()
        job_id = ask(page, models_ui, "Say hi again.")
        assert answered_by(worker, job_id) == MODEL
        row(page, "Say hi.").first.click()
        expect(page.locator(MODEL_PICKER)).to_have_value(re.compile(f"^{MISTRAL} · loads first"))  # its own, unloaded again
        no_error_details(page, notes=("New chats will start with these settings.",))
    finally:
        models_ui.stop()


def test_a_conversation_with_function_calls_shows_them_as_notes(ui: Ui, stack: Stack, open_page: Callable[[str], Page], log_dir: Path) -> None:
    """Calls and results made through the api show as notes, readable, and the chat goes on."""
    items = [{"role": "user", "content": "What is the weather in Oslo?"},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
             {"type": "function_call_output", "call_id": "call_1", "output": "Cold, 2 degrees"},
             {"role": "assistant", "content": "It is cold in Oslo."}]
    httpx.post(f"{stack.base_url}/conversations", json={"items": items, "metadata": {"title": "Tools in Oslo"}}, timeout=10).raise_for_status()
    page = open_page(ui.url)
    row(page, "Tools in Oslo").first.click()
    bot = page.locator(BOT)
    expect(bot.filter(has_text="Called get_weather")).to_have_count(1)
    expect(bot.filter(has_text="get_weather returned")).to_have_count(1)
    expect(page.locator("body")).to_contain_text('{"city": "Oslo"}')
    expect(page.locator("body")).to_contain_text("Cold, 2 degrees")
    expect(bot.filter(has_text="It is cold in Oslo.")).to_have_count(1)
    # The notes open as they are drawn: shown whole once each is as tall as what it holds.
    page.wait_for_function("() => [...document.querySelectorAll('.thought-group .content')]"
                           ".every(c => c.scrollHeight > 0 && c.getBoundingClientRect().height >= c.scrollHeight - 1)")
    page.screenshot(path=str(log_dir / "ui-function-calls.png"), full_page=True)
    job_id = ask(page, ui, "Thanks!")
    assert job_status(stack, job_id) == "completed"
    no_error_details(page)
