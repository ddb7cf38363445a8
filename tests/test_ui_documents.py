"""Documents on the chat page, in a real browser against a real api, worker and SmolLM2: files
attached to a message show as chips, are read by the answer (its citations, read through the
api: SmolLM2's words prove nothing), stay with the conversation for a follow-up and a reload;
an answer read from parts of a long PDF says which pages; a file the api refuses sends nothing."""

import base64
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from devstack import RedisServer, Stack, serve, wait_for
from tests.screenshots import readme_shot
from tests.test_ui import (  # noqa: F401  # fixtures
    BOT,
    CHATBOT,
    REPLY_S,
    SUBMIT,
    TEXTBOX,
    TOAST,
    Ui,
    ask,
    browser,
    new_page,
    no_error_details,
    open_page,
    send,
)
from tools.sample_documents import NEEDLE_PAGE, long_pdf, pdf_with_pages, scan_pdf

pytestmark = pytest.mark.browser

ATTACH = "#hearth-attach"
USER = '[data-testid="user"]'
BINS = "Bin day is Thursday. The recycling goes out every other week."
MAX_FILE_BYTES = 256 * 1024
PLUMBER = "The plumber comes on Friday at nine to fix the kitchen tap."


@pytest.fixture(scope="module")
def docs(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    """A 768-token window, as tests/test_documents_answers.py's: small files fit whole, the
    200-page report (90 kB) only in parts; answers of 8 tokens (their words are not what is
    checked); documents of at most 256 kB."""
    yield from serve(redis_server, log_dir, N_CTX="768", DEFAULT_MAX_TOKENS="8", DOCUMENT_MAX_FILE_BYTES=str(MAX_FILE_BYTES))


@pytest.fixture(scope="module")
def docs_ui(docs: Stack, log_dir: Path) -> Iterator[Ui]:
    u = Ui(docs.env, log_dir)
    yield u
    u.stop()


def api(stack: Stack, path: str) -> Any:
    response = httpx.get(f"{stack.base_url}{path}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def conversations(stack: Stack) -> list[dict[str, Any]]:
    return list(api(stack, "/conversations")["data"])


def items(stack: Stack, conv_id: str, count: int) -> list[dict[str, Any]]:
    """The conversation's items once it has `count` (an answer is filed when its job ends)."""
    wait_for(lambda: len(api(stack, f"/conversations/{conv_id}/items?order=asc")["data"]) == count, 30, f"{count} items stored")
    return list(api(stack, f"/conversations/{conv_id}/items?order=asc")["data"])


def attached(item: dict[str, Any]) -> list[str]:
    return [p["filename"] for p in item["content"] if p["type"] == "input_file"]


def cited(item: dict[str, Any]) -> list[tuple[str, int | None, int | None]]:
    return [(a["filename"], a["page"], a["chunk"]) for a in item["content"][0]["annotations"]]


def listed(name: str) -> re.Pattern[str]:
    """A file's name as the attach box lists it: its stem and its suffix apart."""
    stem, dot, suffix = name.rpartition(".")
    return re.compile(rf"{re.escape(stem)}\s*{re.escape(dot + suffix)}")


def attach(page: Page, paths: list[Path]) -> None:
    """Chooses files with the attach button's file chooser, and waits until the page holds them."""
    page.locator(f"{ATTACH} input[type=file]").set_input_files([str(p) for p in paths])
    for path in paths:
        expect(page.locator(ATTACH)).to_contain_text(listed(path.name))


def drop(page: Page, paths: list[Path]) -> None:
    """Drops files on the attach box, as a file manager does, and waits until the page holds them."""
    files = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in paths]
    dropped = page.evaluate_handle("""(files) => {
      const data = new DataTransfer();
      for (const [name, b64] of files) data.items.add(new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))], name));
      return data;
    }""", files)
    page.locator(f"{ATTACH} button").first.dispatch_event("drop", {"dataTransfer": dropped})
    for path in paths:
        expect(page.locator(ATTACH)).to_contain_text(listed(path.name))


def kept_by_ui(ui: Ui, name: str) -> list[Path]:
    """Copies of an attached file on the ui's disk (Gradio's cache)."""
    return list(ui.data.rglob(name))


@pytest.mark.timeout(600)  # four short answers
def test_attached_files_show_as_chips_are_read_and_stay_for_a_follow_up(docs: Stack, docs_ui: Ui, tmp_path: Path,
                                                                        open_page: Callable[[str], Page]) -> None:  # noqa: F811
    (bins := tmp_path / "bins.txt").write_text(BINS)
    (memo := tmp_path / "memo.pdf").write_bytes(pdf_with_pages([PLUMBER]))
    page = open_page(docs_ui.url)
    expect(page.locator(TEXTBOX)).to_be_editable(timeout=30_000)  # the page is set up, as a person sees it
    known = {c["id"] for c in conversations(docs)}
    drop(page, [bins, memo])
    page.click(SUBMIT)  # no message yet: nothing is sent, and the files stay attached
    expect(page.locator(TEXTBOX)).to_be_editable()
    expect(page.locator(ATTACH)).to_contain_text(listed("memo.pdf"))
    assert len(conversations(docs)) == len(known)
    ask(page, docs_ui, "When is bin day?")
    expect(page.locator(CHATBOT)).not_to_contain_text("Reading the attached files")  # read, and the answer came
    question = page.locator(USER).last
    expect(question).to_contain_text("📎 bins.txt")
    expect(question).to_contain_text("📎 memo.pdf")
    expect(question).to_contain_text("When is bin day?")
    expect(page.locator(ATTACH)).not_to_contain_text(listed("bins.txt"))  # the next message attaches nothing unless asked
    assert not kept_by_ui(docs_ui, "bins.txt") and not kept_by_ui(docs_ui, "memo.pdf")  # sent to the api, deleted here

    [conv] = [c for c in conversations(docs) if c["id"] not in known]
    asked, answer = items(docs, conv["id"], 2)
    assert attached(asked) == ["bins.txt", "memo.pdf"]
    assert sorted(cited(answer)) == [("bins.txt", None, None), ("memo.pdf", None, None)]  # both read whole
    expect(page.locator(CHATBOT)).not_to_contain_text("Answered from")  # no note for documents read whole

    # Regenerating the answer, or editing the question, keeps the question's documents.
    ended = docs_ui.replies_ended()
    page.locator(CHATBOT).get_by_role("button", name="Retry").last.click()
    wait_for(lambda: docs_ui.replies_ended() > ended, REPLY_S, "the regenerated reply", docs_ui.proc)
    wait_for(lambda: items(docs, conv["id"], 2)[1]["id"] != answer["id"], 30, "the new answer to be stored")
    again, answer = items(docs, conv["id"], 2)
    assert attached(again) == ["bins.txt", "memo.pdf"] and len(cited(answer)) == 2
    ended = docs_ui.replies_ended()
    page.locator(CHATBOT).get_by_role("button", name="Edit").last.click()
    box = page.locator(f"{CHATBOT} textarea.edit-textarea")
    box.fill(box.input_value().replace("When is bin day?", "When does the recycling go out?"))  # the chips left as they were
    page.locator(CHATBOT).get_by_role("button", name="Submit").click()
    wait_for(lambda: docs_ui.replies_ended() > ended, REPLY_S, "the edited turn's reply", docs_ui.proc)
    wait_for(lambda: items(docs, conv["id"], 2)[1]["id"] != answer["id"], 30, "the edited turn to be stored")
    edited, answer = items(docs, conv["id"], 2)
    assert edited["content"][0]["text"] == "When does the recycling go out?" and attached(edited) == ["bins.txt", "memo.pdf"]
    assert len(cited(answer)) == 2
    expect(page.locator(USER).last).to_contain_text("📎 memo.pdf")

    ask(page, docs_ui, "When does the plumber come?")  # nothing attached again
    follow_up, second = items(docs, conv["id"], 4)[2:]
    assert attached(follow_up) == []
    assert sorted(cited(second)) == [("bins.txt", None, None), ("memo.pdf", None, None)]  # the conversation's documents, read again
    expect(page.locator(USER).last).not_to_contain_text("📎")

    page.reload()  # the chips come from the stored items now
    expect(page.locator(USER).first).to_contain_text("📎 bins.txt")
    expect(page.locator(USER).first).to_contain_text("📎 memo.pdf")
    expect(page.locator(USER).last).to_contain_text("When does the plumber come?")
    expect(page.locator(USER).last).not_to_contain_text("📎")
    no_error_details(page)


@pytest.mark.timeout(600)
def test_an_answer_read_from_parts_of_a_long_pdf_says_which_pages(docs: Stack, docs_ui: Ui, tmp_path: Path, log_dir: Path,
                                                                 open_page: Callable[[str], Page]) -> None:  # noqa: F811
    (report := tmp_path / "report.pdf").write_bytes(long_pdf())
    page = open_page(docs_ui.url)
    expect(page.locator(TEXTBOX)).to_be_editable(timeout=30_000)
    known = {c["id"] for c in conversations(docs)}
    attach(page, [report])
    ask(page, docs_ui, "Where is the spare key to the blue shed hidden?")
    [conv] = [c for c in conversations(docs) if c["id"] not in known]
    answer = items(docs, conv["id"], 2)[1]
    pages = [p for name, p, chunk in cited(answer) if name == "report.pdf" and chunk is not None]
    assert NEEDLE_PAGE in pages and len(pages) == len(cited(answer)) < 100  # only parts were read, the needed one among them

    def note_pages() -> str:
        note = page.locator(BOT, has_text="Answered from")
        expect(note).to_have_count(1)
        text = note.inner_text()
        assert "of report.pdf" in text and "only those parts were read" in text
        return text

    said = note_pages()
    assert str(NEEDLE_PAGE) in re.findall(r"\d+", said)
    page.reload()  # from the stored annotations
    expect(page.locator(USER).last).to_contain_text("📎 report.pdf")
    assert note_pages() == said
    readme_shot(page, "documents", log_dir)


def test_a_refused_file_says_why_and_sends_nothing(docs: Stack, docs_ui: Ui, tmp_path: Path,
                                                   open_page: Callable[[str], Page]) -> None:  # noqa: F811
    (photo := tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (notes := tmp_path / "notes.md").write_text("# Notes\n" + BINS)
    (scan := tmp_path / "scan.pdf").write_bytes(scan_pdf())
    page = open_page(docs_ui.url)
    expect(page.locator(TEXTBOX)).to_be_editable(timeout=30_000)
    known, jobs = len(conversations(docs)), len(docs_ui.job_ids())
    page.locator(f"{ATTACH} input[type=file]").set_input_files([str(photo)])  # a type Hearth does not read: the page refuses it
    expect(page.locator(TOAST)).to_contain_text("Invalid file type: photo.png. Only .pdf, .txt")
    expect(page.locator(ATTACH)).not_to_contain_text(listed("photo.png"))
    attach(page, [notes, scan])
    send(page, "What does the scan say?")
    refusal = page.locator(BOT).last
    expect(refusal).to_contain_text("scan.pdf was not attached, and nothing was sent", timeout=60_000)  # each file is read as it is sent
    expect(refusal).to_contain_text("no text layer")
    expect(page.locator(TEXTBOX)).to_be_editable()
    assert len(conversations(docs)) == known and len(docs_ui.job_ids()) == jobs  # no chat made, no job
    wait_for(lambda: docs.api.log().count("DELETE /v1/files/") == 1, 10, "the file sent before the refused one to be deleted")
    assert not {"notes.md", "scan.pdf"} & {f["filename"] for f in api(docs, "/files")["data"]}  # the message attached nothing
    assert not kept_by_ui(docs_ui, "scan.pdf") and not kept_by_ui(docs_ui, "notes.md")

    (big := tmp_path / "big.txt").write_text(BINS * (MAX_FILE_BYTES // len(BINS) + 1))
    attach(page, [big])
    send(page, "Summarise it.")
    expect(page.locator(BOT).last).to_contain_text(f"big.txt was not attached, and nothing was sent: The document is larger than {MAX_FILE_BYTES} bytes",
                                                   timeout=60_000)
    assert len(conversations(docs)) == known and len(docs_ui.job_ids()) == jobs
    no_error_details(page, ("Invalid file type",))
