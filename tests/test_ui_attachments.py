"""ui.attachments: the chips of a message's files and the note under an answer read from parts
of documents, as the page writes them (no browser; tests/test_ui_documents.py shows them)."""

import json

from hearth.documents import Citation, DocumentRef
from tests.test_ui_client import Api, chunk, events_of, sse
from tests.test_ui_untrusted import fetching, rendered
from ui.attachments import chips, parts_read, stored_files, with_chips, without_chips
from ui.chat_session import shown_items, turn_messages
from ui.client import Delta, Finished, parse_citations
from ui.reply import ReplyView

LEASE = DocumentRef(document_id="file-1", filename="lease.pdf")


def cited(page: int | None, chunk: int | None, name: str = "lease.pdf", doc: str = "file-1") -> Citation:
    return Citation(document_id=doc, filename=name, page=page, chunk=chunk)


def test_the_note_names_the_pages_read_in_runs() -> None:
    assert parts_read([cited(12, 4), cited(13, 5), cited(14, 6)]) == "ℹ️ Answered from pages 12\u201314 of lease\\.pdf (only those parts were read)"
    assert parts_read([cited(3, 0), cited(7, 1), cited(8, 2), cited(9, 3), cited(137, 9), cited(137, 10)]) == (
        "ℹ️ Answered from pages 3, 7\u20139 and 137 of lease\\.pdf (only those parts were read)")
    assert parts_read([cited(2, 0), cited(None, None, "bins.txt", "file-2"), cited(5, 1, "memo.md", "file-3")]) == (
        "ℹ️ Answered from page 2 of lease\\.pdf and page 5 of memo\\.md (only those parts were read)")


def test_documents_read_whole_need_no_note() -> None:
    assert parts_read([cited(None, None), cited(None, None, "bins.txt", "file-2")]) is None
    assert parts_read([]) is None


def test_a_hostile_filename_is_literal_text() -> None:
    evil = DocumentRef(document_id="file-9", filename="![x](http://127.0.0.1:18999/leak?q=NAME) <img src=x>\n# big.pdf")
    for markdown in (with_chips("Hi", [evil]), parts_read([cited(1, 0, evil.filename, "file-9")]) or ""):
        assert not fetching(rendered(markdown)) and "<h1>" not in rendered(markdown) and "<a " not in rendered(markdown)


def test_chips_come_above_the_question_and_an_edit_drops_them() -> None:
    shown = with_chips("What about pets?", [LEASE])
    assert shown == "📎 **lease\\.pdf**\n\nWhat about pets?" and chips([]) == "" and with_chips("Hi", []) == "Hi"
    assert without_chips(shown.replace("pets", "cats"), [LEASE]) == "What about cats?"
    assert without_chips("📎 mine", []) == "📎 mine"


def test_a_turn_attaches_its_files_by_id_before_its_text() -> None:
    assert turn_messages("", "Hi") == [{"role": "user", "content": "Hi"}]
    assert turn_messages("Be brief.", "Pets?", [LEASE]) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-1"}}, {"type": "text", "text": "Pets?"}]}]


def test_stored_items_show_their_files_and_the_parts_read() -> None:
    annotation = {"type": "file_citation", "file_id": "file-1", "filename": "lease.pdf", "index": 3, "page": 12, "chunk": 4}
    items = [{"type": "message", "id": "msg_1", "role": "user", "content": [
                {"type": "input_text", "text": "Pets?"}, {"type": "input_file", "file_id": "file-1", "filename": "lease.pdf"}]},
             {"type": "message", "id": "msg_2", "role": "assistant", "status": "incomplete", "content": [
                {"type": "output_text", "text": "No.", "annotations": [annotation, {"type": "url_citation"}]}]}]
    assert stored_files(items[0]) == [LEASE]
    question, answer, read, stopped = shown_items(items)
    assert question == {"role": "user", "content": "Pets?", "id": "msg_1", "files": [LEASE]}
    assert answer == {"role": "assistant", "content": "No.", "id": "msg_2"}
    assert read["metadata"]["title"] == parts_read([cited(12, 4)]) and "stopped" in stopped["metadata"]["title"]
    assert parse_citations([annotation, "odd", None]) == [cited(12, 4)] and parse_citations(None) == []


def test_the_reply_ends_with_the_note_when_parts_were_read() -> None:
    view = ReplyView(text="Under the pot.")
    assert view.apply(Finished("stop", [cited(137, 9)]))
    assert view.messages()[-1]["metadata"]["title"] == parts_read([cited(137, 9)])
    whole = ReplyView(text="Thursday.")
    assert not whole.apply(Finished("stop", [cited(None, None)]))  # nothing to add
    assert len(whole.messages()) == 1


def test_the_streams_last_chunk_carries_the_citations() -> None:
    annotation = {"type": "file_citation", "file_id": "file-1", "filename": "lease.pdf", "page": 137, "chunk": 9}
    last = json.loads(chunk({}, "stop")[6:])
    api = Api(sse([chunk({"content": "Yes."}), f"data: {json.dumps({**last, 'citations': [annotation]})}\r\n\r\n", "data: [DONE]\r\n\r\n"]))
    assert events_of(api) == [Delta("Yes."), Finished("stop", [cited(137, 9)])]
