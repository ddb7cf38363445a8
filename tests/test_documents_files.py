"""Documents through the official openai client: `user_data` files (their bytes in the blob
store, their text read once in a bounded process), file content parts in chat completions and
Responses, owner-only everywhere, deleted with the file or the person; the S3 blob store
against a real S3-compatible server."""

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from minio import Minio
from rq.job import Job

from api.files.store import EXPIRING_KEY
from devstack import ROOT, RedisServer, Stack, add_user, serve, wait_for
from hearth.contract import RQ_SERIALIZER
from hearth.documents import DocumentText, document_key
from tests.batches import file_lines, request_line, run_batch, wait_status
from tools.sample_documents import (
    NEEDLE,
    NEEDLE_PAGE,
    bomb_pdf,
    docx,
    long_pdf,
    looping_pdf,
    many_pages_pdf,
    pdf_with_pages,
    scan_pdf,
    slow_pdf,
)

CPU_S = 3
SECRET = "Zanzibar-7741 is the alarm code"  # document text that must never reach a log
ASK = [{"type": "text", "text": "Say hi."}]


@pytest.fixture(scope="module")
def docs(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    yield from serve(redis_server, log_dir, AUTH="on", DOCUMENT_STORAGE_MB_PER_USER="1", DOCUMENT_MAX_FILE_BYTES="700000",
                     DOCUMENT_EXTRACT_CPU_S=str(CPU_S), DOCUMENT_EXTRACT_WALL_S="30", DOCUMENT_MAX_PAGES="500")


def person(stack: Stack, name: str) -> openai.OpenAI:
    """A new person's client (a name of their own per test: storage bounds are per person)."""
    key = add_user(stack, f"{name}-{time.monotonic_ns()}")
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=120)


def named(stack: Stack, name: str) -> tuple[str, openai.OpenAI]:
    name = f"{name}-{time.monotonic_ns()}"
    return name, openai.OpenAI(base_url=stack.base_url, api_key=add_user(stack, name), max_retries=0, timeout=120)


def text_of(stack: Stack, document_id: str) -> DocumentText | None:
    raw = stack.redis.get(document_key(document_id))
    return None if raw is None else DocumentText.model_validate_json(raw)


def payload_of(stack: Stack, job_id: str) -> dict[str, Any]:
    args: dict[str, Any] = Job.fetch(job_id, connection=stack.redis, serializer=RQ_SERIALIZER).args[0]
    return args


def chat(client: openai.OpenAI, content: list[dict[str, Any]], **extra: Any) -> str:
    """Asks with `content` as the user's message; the job id."""
    messages: Any = [{"role": "user", "content": content}]
    raw = client.chat.completions.with_raw_response.create(model="any", messages=messages, max_tokens=4, **extra)
    assert raw.parse().choices[0].finish_reason in ("stop", "length")
    return raw.headers["X-Job-Id"]


def test_a_pdf_is_kept_with_its_text_read_once_and_deleted_with_its_bytes(docs: Stack) -> None:
    client = person(docs, "ann")
    data = pdf_with_pages(["First page: the lease runs two years.", f"Second page. {SECRET}.", "Third page: pets allowed."])
    f = client.files.create(file=("lease.pdf", data), purpose="user_data")
    assert f.purpose == "user_data" and f.bytes == len(data) and f.filename == "lease.pdf" and f.expires_at is None
    text = text_of(docs, f.id)
    assert text is not None and text.filename == "lease.pdf"
    assert [p.number for p in text.pages] == [1, 2, 3] and "pets allowed" in text.pages[2].text and SECRET in text.pages[1].text
    assert client.files.content(f.id).content == data
    assert (docs.blobs / f.id).read_bytes() == data  # on disk, not in Redis
    assert not docs.redis.exists(f"hearth:file:{f.id}:data")
    assert f.id in [x.id for x in client.files.list(purpose="user_data").data]
    assert client.files.delete(f.id).deleted
    assert text_of(docs, f.id) is None and not (docs.blobs / f.id).exists()
    assert f.id not in [x.id for x in client.files.list().data]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    assert SECRET not in docs.logs()


def test_a_document_past_its_own_end_loses_its_bytes_though_nobody_lists_files(docs: Stack) -> None:
    name, client = named(docs, "una")
    hour: Any = {"anchor": "created_at", "seconds": 3600}
    ending, staying = (client.files.create(file=(f"{n}.txt", b"Some text."), purpose="user_data", expires_after=hour) for n in "ab")
    assert ending.expires_at == ending.created_at + 3600 and 3500 < docs.redis.ttl(document_key(ending.id)) <= 3600
    assert (docs.blobs / ending.id).exists() and (docs.blobs / staying.id).exists()
    # Its hour passes, as Redis sees it: the record expires, and its end is due.
    docs.redis.pexpire(f"hearth:file:{ending.id}", 1)
    docs.redis.zadd(EXPIRING_KEY, {f"{ending.id}:{name}": ending.created_at}, xx=True)
    wait_for(lambda: not (docs.blobs / ending.id).exists(), 10, "the bytes of the document past its end to go")
    assert docs.redis.zrange(f"hearth:files:{name}", 0, -1) == [staying.id.encode()]  # its place in the list went with them
    assert docs.redis.zrange(EXPIRING_KEY, 0, -1).count(f"{staying.id}:{name}".encode()) == 1
    assert (docs.blobs / staying.id).exists() and [f.id for f in client.files.list().data] == [staying.id]
    client.files.delete(staying.id)  # deleted before its end: nothing is left to sweep
    assert not (docs.blobs / staying.id).exists() and docs.redis.zscore(EXPIRING_KEY, f"{staying.id}:{name}") is None


def test_text_markdown_html_and_docx_are_read_with_their_headings(docs: Stack) -> None:
    client = person(docs, "ben")
    cases: dict[str, tuple[bytes, list[tuple[str | None, str]]]] = {
        "notes.txt": (b"Buy milk.\nCall the plumber.", [(None, "Call the plumber.")]),
        "guide.md": (b"Intro line.\n\n# Pets\nCats allowed.\n\n## Parking\nOne space.", [(None, "Intro"), ("Pets", "Cats"), ("Parking", "One space")]),
        "page.html": (b"<html><head><title>t</title><style>p{}</style></head><body><p>Hello there.</p><script>alert('x')</script>"
                      b"<h2>Rules</h2><p>No smoking &amp; no fires.</p></body></html>", [(None, "Hello there."), ("Rules", "No smoking & no fires.")]),
        "offer.docx": (docx([(None, "Dear tenant,"), ("Heading1", "Rent"), (None, "900 a month.")]), [(None, "Dear tenant,"), ("Rent", "900 a month.")]),
    }
    for name, (data, expected) in cases.items():
        f = client.files.create(file=(name, data), purpose="assistants")
        text = text_of(docs, f.id)
        assert text is not None, name
        assert [(p.number, p.heading) for p in text.pages] == [(n, h) for n, (h, _) in enumerate(expected, 1)], (name, text)
        for page, (_, words) in zip(text.pages, expected):
            assert words in page.text, (name, page)
        assert "alert" not in json.dumps(text.model_dump()) and "p{}" not in json.dumps(text.model_dump())


def test_unreadable_files_are_refused_with_why(docs: Stack) -> None:
    client = person(docs, "cy")
    with pytest.raises(openai.BadRequestError) as unknown:
        client.files.create(file=("tool.exe", b"MZ\x90\x00\x03" + b"\x00" * 100), purpose="user_data")
    assert "PDF, plain text, Markdown, HTML and DOCX" in unknown.value.message
    with pytest.raises(openai.BadRequestError) as scan:
        client.files.create(file=("scan.pdf", scan_pdf()), purpose="user_data")
    assert "no text layer" in scan.value.message
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("a.txt", b"hi"), purpose="vision")
    assert "user_data" in purpose.value.message
    with pytest.raises(openai.APIStatusError) as big:
        client.files.create(file=("big.txt", b"x" * 700_001), purpose="user_data")
    assert big.value.status_code == 413
    assert client.files.list().data == []  # nothing kept of any of them


def test_a_person_keeps_documents_up_to_their_storage_bound(docs: Stack) -> None:
    client = person(docs, "dee")
    first = client.files.create(file=("a.txt", b"a" * 600_000), purpose="user_data")
    with pytest.raises(openai.APIStatusError) as over:
        client.files.create(file=("b.txt", b"b" * 600_000), purpose="user_data")
    assert over.value.status_code == 413
    assert "0.6 MB of your 1 MB" in over.value.message, over.value.message
    assert person(docs, "eve").files.create(file=("b.txt", b"b" * 600_000), purpose="user_data").bytes == 600_000  # the bound is each person's
    client.files.delete(first.id)
    assert client.files.create(file=("b.txt", b"b" * 600_000), purpose="user_data").bytes == 600_000


def test_uploads_at_once_cannot_pass_the_storage_bound_together(docs: Stack) -> None:
    client = person(docs, "zed")
    outcomes: list[int] = []

    def upload(n: int) -> None:
        try:
            client.files.create(file=(f"{n}.txt", bytes([97 + n]) * 600_000), purpose="user_data")
            outcomes.append(200)
        except openai.APIStatusError as exc:
            outcomes.append(exc.status_code)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == [200, 413, 413]
    assert sum(f.bytes for f in client.files.list().data) == 600_000


@pytest.mark.parametrize(("name", "data", "why"), [
    ("bomb.pdf", bomb_pdf(), "decompression bomb"),
    ("pages.pdf", many_pages_pdf(100_000), "100000 pages; Hearth reads at most 500"),
    ("loop.pdf", looping_pdf(), "could not be read"),
])
def test_hostile_pdfs_are_refused(docs: Stack, name: str, data: bytes, why: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        person(docs, "fay").files.create(file=(name, data), purpose="user_data")
    assert why in refused.value.message


def test_a_pdf_that_needs_minutes_is_cut_at_its_cpu_bound_while_another_person_chats(docs: Stack) -> None:
    mallory, gus = person(docs, "mallory"), person(docs, "gus")
    outcome: dict[str, Any] = {}

    def upload() -> None:
        start = time.monotonic()
        try:
            mallory.files.create(file=("slow.pdf", slow_pdf()), purpose="user_data")
        except openai.BadRequestError as exc:
            outcome["error"] = exc.message
        outcome["seconds"], outcome["ended"] = time.monotonic() - start, time.monotonic()

    thread = threading.Thread(target=upload)
    thread.start()
    answer = gus.chat.completions.create(model="any", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
    answered = time.monotonic()
    thread.join(60)
    assert answer.choices[0].message.content is not None
    assert "needed more than its bounds" in outcome["error"] and f"{CPU_S} CPU seconds" in outcome["error"]
    assert answered < outcome["ended"], "the chat waited for the hostile document"
    assert outcome["seconds"] < 30  # its wall-clock bound, not the minutes it asked for


def test_files_in_chat_completions_become_the_message_documents(docs: Stack) -> None:
    client = person(docs, "hal")
    f = client.files.create(file=("lease.pdf", pdf_with_pages(["The rent is 900."])), purpose="user_data")
    job_id = chat(client, [*ASK, {"type": "file", "file": {"file_id": f.id}}])
    message = payload_of(docs, job_id)["messages"][-1]
    assert message["content"] == "Say hi." and message["documents"] == [{"document_id": f.id, "filename": "lease.pdf"}]

    inline = base64.b64encode(pdf_with_pages(["Inline page one.", "Inline page two."])).decode()
    job_id = chat(client, [*ASK, {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{inline}", "filename": "memo.pdf"}}])
    [ref] = payload_of(docs, job_id)["messages"][-1]["documents"]
    assert ref["filename"] == "memo.pdf" and ref["document_id"].startswith("doc-")
    text = text_of(docs, ref["document_id"])
    assert text is not None and [p.text for p in text.pages] == ["Inline page one.", "Inline page two."]
    assert 0 < docs.redis.ttl(document_key(ref["document_id"])) <= 86400  # the job's lifetime
    assert client.files.list().data == [client.files.retrieve(f.id)]  # an inline file is no file
    assert "Inline page" not in docs.logs() and "rent is 900" not in docs.logs()


def test_file_parts_that_cannot_be_read_are_refused_before_anything_is_queued(docs: Stack) -> None:
    client, other = person(docs, "ida"), person(docs, "jon")
    theirs = other.files.create(file=("private.txt", b"Private."), purpose="user_data")
    batch = client.files.create(file=("in.jsonl", b'{"custom_id": "a"}\n'), purpose="batch")
    cases: list[tuple[dict[str, Any], type[openai.APIStatusError], str]] = [
        ({"file_url": "http://example.com/a.pdf"}, openai.BadRequestError, "fetches nothing from the network"),
        ({"file_id": theirs.id}, openai.NotFoundError, "No such File object"),
        ({"file_id": "file-missing"}, openai.NotFoundError, "No such File object"),
        ({"file_id": batch.id}, openai.BadRequestError, "purpose 'batch'"),
        ({"file_data": base64.b64encode(scan_pdf()).decode(), "filename": "scan.pdf"}, openai.BadRequestError, "no text layer"),
        ({"file_data": "%%% not base64", "filename": "a.txt"}, openai.BadRequestError, "not base64"),
        ({}, openai.BadRequestError, "file_id"),
    ]
    queued = len(docs.redis.keys("hearth:job:*"))
    for part, error, why in cases:
        with pytest.raises(error) as refused:
            client.chat.completions.create(model="any", messages=[{"role": "user", "content": [*ASK, {"type": "file", "file": part}]}], max_tokens=4)  # type: ignore[misc]
        assert why in refused.value.message, (part, refused.value.message)
    with pytest.raises(openai.BadRequestError) as assistant:
        client.chat.completions.create(model="any", max_tokens=4, messages=[
            {"role": "assistant", "content": [{"type": "file", "file": {"file_id": batch.id}}]}, {"role": "user", "content": "Hi"}])  # type: ignore[misc]
    assert "only a user's message may attach files" in assistant.value.message
    # A request refused on its other fields reads no document: nothing inline is kept for it.
    kept = set(docs.redis.keys(document_key("doc-*")))
    inline = base64.b64encode(b"Kept for nothing.").decode()
    unenforceable = {"name": "n", "schema": {"type": "string", "pattern": "a+"}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="any", max_tokens=4, response_format={"type": "json_schema", "json_schema": unenforceable},
                                       messages=[{"role": "user", "content": [*ASK, {"type": "file", "file": {"file_data": inline, "filename": "a.txt"}}]}])
    assert str(refused.value.body["param"]).startswith("response_format")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="any", max_output_tokens=4, text={"format": {"type": "json_schema", **unenforceable}},
                                input=[{"role": "user", "content": [{"type": "input_file", "file_data": inline, "filename": "a.txt"}]}])
    assert refused.value.body["param"] == "text.format.schema"
    assert set(docs.redis.keys(document_key("doc-*"))) == kept
    assert len(docs.redis.keys("hearth:job:*")) == queued


def inline_documents(stack: Stack, name: str) -> set[str]:
    """The inline documents kept as `name`'s: their text's owner keys say so."""
    keys = stack.redis.keys(document_key("doc-*") + ":owner")
    return {key.decode().split(":")[2] for key, owner in zip(keys, stack.redis.mget(keys) if keys else [], strict=True) if owner == name.encode()}


def inline_part(data: bytes, filename: str = "notes.txt") -> dict[str, Any]:
    return {"type": "file", "file": {"file_data": base64.b64encode(data).decode(), "filename": filename}}


def test_inline_documents_count_against_their_senders_storage_bound(docs: Stack) -> None:
    name, client = named(docs, "gus")
    client.files.create(file=("a.txt", b"a" * 600_000), purpose="user_data")
    with pytest.raises(openai.APIStatusError) as over:
        chat(client, [*ASK, inline_part(b"word " * 100_000)])
    assert over.value.status_code == 413 and over.value.body["param"] == "messages.0.content.1.file.file_data"
    assert "0.6 MB of your 1 MB" in over.value.message, over.value.message
    assert inline_documents(docs, name) == set()
    blank = b"Hi." + b"\n" * 300_000  # 300 kB, three characters of text: a short prompt
    kept = client.responses.with_raw_response.create(model="any", max_output_tokens=4, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Say hi."},
        {"type": "input_file", "file_data": base64.b64encode(blank).decode(), "filename": "notes.txt"}]}])
    [ref] = payload_of(docs, kept.headers["X-Job-Id"])["messages"][-1]["documents"]
    assert inline_documents(docs, name) == {ref["document_id"]}
    with pytest.raises(openai.APIStatusError) as over:  # an upload counts the inline one too
        client.files.create(file=("b.txt", b"b" * 200_000), purpose="user_data")
    assert over.value.status_code == 413 and "0.9 MB of your 1 MB" in over.value.message, over.value.message
    assert person(docs, "hue").files.create(file=("b.txt", b"b" * 200_000), purpose="user_data").bytes == 200_000  # each person's own


def test_inline_documents_of_a_refused_request_are_deleted(docs: Stack) -> None:
    name, client = named(docs, "ivy")
    admin = {"Authorization": f"Bearer {add_user(docs, f'admin-{time.monotonic_ns()}', admin=True)}"}
    # A later part that cannot be read: the one read before it goes.
    with pytest.raises(openai.BadRequestError) as refused:
        chat(client, [*ASK, inline_part(b"Kept for nothing."), inline_part(scan_pdf(), "scan.pdf")])
    assert "no text layer" in refused.value.message
    assert inline_documents(docs, name) == set()
    # The quota refuses the job once its documents were read (429): they go, in both APIs.
    assert httpx.put(f"{docs.base_url}/admin/users/{name}/quota", headers=admin, json={"tokens_per_day": 0}).status_code == 200
    with pytest.raises(openai.RateLimitError):
        chat(client, [*ASK, inline_part(b"Read, then refused.")])
    for store in (True, False):
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model="any", max_output_tokens=4, store=store, input=[{"role": "user", "content": [
                {"type": "input_text", "text": "Say hi."},
                {"type": "input_file", "file_data": base64.b64encode(b"Read, then refused.").decode(), "filename": "a.txt"}]}])
    assert inline_documents(docs, name) == set()
    assert not docs.redis.hlen(f"hearth:documents:{name}:inline")
    assert httpx.put(f"{docs.base_url}/admin/users/{name}/quota", headers=admin, json={}).status_code == 200
    chat(client, [*ASK, inline_part(b"Read and kept.")])
    assert len(inline_documents(docs, name)) == 1 and docs.redis.hlen(f"hearth:documents:{name}:inline") == 1


def test_responses_take_input_files_and_a_conversation_keeps_them_for_later_turns(docs: Stack) -> None:
    client = person(docs, "kim")
    f = client.files.create(file=("lease.pdf", pdf_with_pages(["Pets: one cat."])), purpose="user_data")
    inline = base64.b64encode(b"# Notes\nBins go out on Tuesday.").decode()
    conv = client.conversations.create()
    first = client.responses.with_raw_response.create(model="any", conversation=conv.id, max_output_tokens=4, input=[{
        "role": "user", "content": [{"type": "input_text", "text": "Summarise."}, {"type": "input_file", "file_id": f.id},
                                    {"type": "input_file", "file_data": f"data:text/markdown;base64,{inline}", "filename": "notes.md"}]}])
    assert first.parse().status in ("completed", "incomplete")  # 4 tokens: often cut short
    with pytest.raises(openai.BadRequestError) as refused:  # as in chats, only a user's message attaches files
        client.responses.create(model="any", max_output_tokens=4, input=[
            {"role": "system", "content": [{"type": "input_file", "file_id": f.id}]}, {"role": "user", "content": "Hi"}])
    assert "only a user's message may attach files" in refused.value.message
    lease, notes = payload_of(docs, first.headers["X-Job-Id"])["messages"][-1]["documents"]
    assert lease == {"document_id": f.id, "filename": "lease.pdf"} and notes["filename"] == "notes.md"
    # Read for the stored response's lifetime; once its turn stands, held by the conversation.
    wait_for(lambda: filed(docs, client, conv.id), 30, "the answer to be filed")
    assert docs.redis.ttl(document_key(notes["document_id"])) == -1

    asked = client.conversations.items.list(conv.id, order="asc").data[0]
    files = [p for p in asked.content if p.type == "input_file"]
    assert [(p.file_id, p.filename) for p in files] == [(f.id, "lease.pdf"), (notes["document_id"], "notes.md")]
    exported = httpx.get(f"{docs.base_url}/conversations/export", headers={"Authorization": f"Bearer {client.api_key}"}).json()
    assert f.id in json.dumps(exported)

    later = client.responses.with_raw_response.create(model="any", conversation=conv.id, max_output_tokens=4, input="Any pets?")
    history = payload_of(docs, later.headers["X-Job-Id"])["messages"]
    assert [m["documents"] for m in history if m["role"] == "user"] == [[lease, notes], []]


def filed(stack: Stack, client: openai.OpenAI, conv_id: str) -> bool:
    """Whether the conversation's last answer is filed (no answer is in progress)."""
    conv = httpx.get(f"{stack.base_url}/conversations/{conv_id}", headers={"Authorization": f"Bearer {client.api_key}"}, timeout=10)
    return conv.json()["hearth_job_id"] is None


def held(stack: Stack, name: str, document_id: str) -> str | None:
    """What keeps an inline document of `name`'s: the conversation holding it, "" for its own
    end, None when it is gone. Its text, owner and listing agree (asserted)."""
    entry = stack.redis.hget(f"hearth:documents:{name}:inline", document_id)
    ttls = {stack.redis.ttl(key) for key in (document_key(document_id), document_key(document_id) + ":owner")}
    if entry is None:
        assert ttls == {-2}
        return None
    _, ends, *holder = entry.decode().split(":", 2)
    assert (ttls == {-1}) == (ends == "0") and (ttls != {-1} or holder) and -2 not in ttls, (entry, ttls)
    return holder[0] if holder else ""


def test_a_conversation_keeps_the_documents_its_questions_sent_inline_as_long_as_the_questions(docs: Stack) -> None:
    """Past the job's lifetime, and gone with the question: its item deleted, a turn that
    replaced it, or the conversation. A chat outside a conversation keeps its own for the job's."""
    name, client = named(docs, "oona")
    conv = client.conversations.create()

    def turn(text: bytes, **extra: Any) -> tuple[str, str]:
        """A turn of `conv` attaching `text` inline: its question's item id, and the document's id."""
        messages: Any = [{"role": "user", "content": [*ASK, inline_part(text)]}]
        raw = client.chat.completions.with_raw_response.create(model="any", max_tokens=4, messages=messages,
                                                               extra_body={"conversation": conv.id, **extra})
        raw.parse()
        [ref] = payload_of(docs, raw.headers["X-Job-Id"])["messages"][-1]["documents"]
        wait_for(lambda: filed(docs, client, conv.id), 30, "the answer to be filed")
        return raw.headers["X-Conversation-Item-Id"], ref["document_id"]

    first_q, first = turn(b"The boiler was serviced in May.")
    assert held(docs, name, first) == conv.id
    assert docs.redis.ttl(f"hearth:documents:{name}:inline") == -1
    second_q, second = turn(b"The gutters were cleared in June.")
    _, edited = turn(b"The gutters were cleared in July.", replace_from=second_q)  # an edit: the question it replaced goes
    assert (held(docs, name, second), held(docs, name, edited)) == (None, conv.id)
    client.conversations.items.delete(first_q, conversation_id=conv.id)
    assert (held(docs, name, first), held(docs, name, edited)) == (None, conv.id)

    # A question deleted while it is answered: its document is not held when the turn stands.
    body = {"model": "any", "max_tokens": 64, "stream": True, "conversation": conv.id,
            "messages": [{"role": "user", "content": [*ASK, inline_part(b"Deleted while it is answered.")]}]}
    with httpx.stream("POST", f"{docs.base_url}/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {client.api_key}"}) as answering:
        [deleted] = payload_of(docs, answering.headers["X-Job-Id"])["messages"][-1]["documents"]
        client.conversations.items.delete(answering.headers["X-Conversation-Item-Id"], conversation_id=conv.id)
        assert any(line == "data: [DONE]" for line in answering.iter_lines())
    wait_for(lambda: filed(docs, client, conv.id), 30, "the answer to be filed")
    assert held(docs, name, deleted["document_id"]) == ""  # the job's lifetime, no more

    outside = chat(client, [*ASK, inline_part(b"Asked outside any conversation.")])
    [alone] = payload_of(docs, outside)["messages"][-1]["documents"]
    assert held(docs, name, alone["document_id"]) == ""
    assert 0 < docs.redis.ttl(document_key(alone["document_id"])) <= 86400  # the job's lifetime
    client.conversations.delete(conv.id)
    assert (held(docs, name, edited), held(docs, name, alone["document_id"])) == (None, "")
    assert docs.redis.ttl(f"hearth:documents:{name}:inline") > 0  # listed as long as the last one left


def test_a_stored_item_naming_another_persons_file_attaches_nothing(docs: Stack) -> None:
    client, other = person(docs, "lou"), person(docs, "max")
    theirs = other.files.create(file=("private.txt", f"{SECRET}.".encode()), purpose="user_data")
    conv = client.conversations.create(items=[{"type": "message", "role": "user",
                                               "content": [{"type": "input_file", "file_id": theirs.id, "filename": "x"}]}])
    raw = client.responses.with_raw_response.create(model="any", conversation=conv.id, max_output_tokens=4, input="What does it say?")
    assert all(m["documents"] == [] for m in payload_of(docs, raw.headers["X-Job-Id"])["messages"])
    with pytest.raises(openai.BadRequestError) as refused:  # only a user's message attaches files
        client.conversations.items.create(conv.id, items=[{"type": "message", "role": "assistant",
                                                           "content": [{"type": "input_file", "file_id": theirs.id, "filename": "x"}]}])
    assert "only a user's message may attach files" in refused.value.message


def test_revoking_a_person_deletes_their_documents_and_stored_responses(docs: Stack) -> None:
    name, client = named(docs, "ned")
    f = client.files.create(file=("a.txt", b"Some text."), purpose="user_data")
    assert text_of(docs, f.id) is not None and (docs.blobs / f.id).exists()
    chat(client, [*ASK, inline_part(b"Sent inline to a chat.")])
    client.responses.create(model="any", max_output_tokens=4, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Say hi."},
        {"type": "input_file", "file_data": base64.b64encode(b"Sent inline to a response.").decode(), "filename": "b.txt"}]}])
    client.responses.create(model="any", max_output_tokens=4, input="Say hi.")
    inline = inline_documents(docs, name)
    assert len(inline) == 2 and len(docs.redis.keys(f"hearth:resp:{name}:*")) == 2
    survivor = person(docs, "ora")
    theirs = survivor.responses.create(model="any", max_output_tokens=4, input="Say hi.")
    admin = {"Authorization": f"Bearer {add_user(docs, f'admin-{time.monotonic_ns()}', admin=True)}"}
    preview = httpx.get(f"{docs.base_url}/admin/users/{name}/revocation", headers=admin).json()
    assert (preview["documents"], preview["responses"]) == (3, 2), preview
    out = subprocess.run([sys.executable, "-m", "api.accounts.cli", "users", "revoke", name], env=docs.env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "3 document(s) and 2 stored response(s)" in out, out
    assert text_of(docs, f.id) is None and not (docs.blobs / f.id).exists() and not docs.redis.exists(f"hearth:file:{f.id}")
    assert inline_documents(docs, name) == set() and all(text_of(docs, d) is None for d in inline)
    assert docs.redis.keys(f"hearth:resp:{name}:*") == [] and not docs.redis.exists(f"hearth:documents:{name}:inline")
    assert survivor.responses.retrieve(theirs.id).id == theirs.id  # another person's stays


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A real S3-compatible server (moto's), as a separate process."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 30, "the S3 server")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_documents_live_in_an_s3_store_when_one_is_configured(redis_server: RedisServer, log_dir: Path, s3: str) -> None:
    stack = Stack(redis_server, None, log_dir, AUTH="off", S3_ENDPOINT=s3, S3_BUCKET="hearth-docs", S3_ACCESS_KEY="test",
                  S3_SECRET_KEY="test-secret", S3_REGION="us-east-1")
    try:
        stack.start_api()
        client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
        data = pdf_with_pages(["Stored in a bucket."])
        f = client.files.create(file=("b.pdf", data), purpose="user_data")
        bucket = Minio(s3.removeprefix("http://"), access_key="test", secret_key="test-secret", secure=False, region="us-east-1")
        assert bucket.get_object("hearth-docs", f.id).read() == data
        assert client.files.content(f.id).content == data and not any(stack.blobs.iterdir())
        client.files.delete(f.id)
        assert [o.object_name for o in bucket.list_objects("hearth-docs")] == []
        assert text_of(stack, f.id) is None
    finally:
        stack.stop()


def test_the_long_document_builder_puts_its_fact_on_its_page() -> None:
    from api.documents.formats import extract

    pages = extract("long.pdf", long_pdf(), 500, 1_000_000)
    assert len(pages) == 200 and [p.number for p in pages if NEEDLE in p.text] == [NEEDLE_PAGE]


def test_a_previous_response_passes_its_documents_on_until_they_are_deleted(docs: Stack) -> None:
    client = person(docs, "ola")
    f = client.files.create(file=("note.txt", b"The boiler is serviced in May."), purpose="user_data")
    first = client.responses.create(model="any", max_output_tokens=4, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "When?"}, {"type": "input_file", "file_id": f.id}]}])

    def continued() -> list[list[dict[str, str]]]:
        raw = client.responses.with_raw_response.create(model="any", previous_response_id=first.id, max_output_tokens=4, input="Sure?")
        return [m["documents"] for m in payload_of(docs, raw.headers["X-Job-Id"])["messages"] if m["role"] == "user"]

    assert continued() == [[{"document_id": f.id, "filename": "note.txt"}], []]
    input_items = client.responses.input_items.list(first.id).data
    assert [(p.type, p.file_id) for p in input_items[0].content if p.type == "input_file"] == [("input_file", f.id)]
    client.files.delete(f.id)
    assert continued() == [[], []]


def test_a_batch_line_with_a_file_goes_to_the_error_file(docs: Stack) -> None:
    client = person(docs, "pat")
    f = client.files.create(file=("n.txt", b"Note."), purpose="user_data")
    with_file = request_line("with-file", "Hi")
    with_file["body"]["messages"][0]["content"] = [{"type": "text", "text": "Read it."}, {"type": "file", "file": {"file_id": f.id}}]
    batch = wait_status(client, run_batch(client, [request_line("plain", "Hi", 2), with_file]), ("completed", "failed"))
    [error] = file_lines(client, batch.error_file_id)
    assert error["custom_id"] == "with-file" and "not available in a batch line" in json.dumps(error)
    assert [line["custom_id"] for line in file_lines(client, batch.output_file_id)] == ["plain"]


def test_a_document_whose_text_is_gone_is_refused_before_the_turn_is_stored(docs: Stack) -> None:
    """The fit check counts every chat with documents (regression: one with short messages was
    surely fitting, so its turn was stored and queued before the worker found the text gone)."""
    client = person(docs, "kai")
    f = client.files.create(file=("n.txt", b"Note."), purpose="user_data")
    docs.redis.delete(document_key(f.id))  # its text gone as the question is sent (deleted meanwhile)
    conv = client.conversations.create()
    queued = len(docs.redis.keys("hearth:job:*"))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="any", max_tokens=4, extra_body={"conversation": conv.id},
                                       messages=[{"role": "user", "content": [*ASK, {"type": "file", "file": {"file_id": f.id}}]}])  # type: ignore[misc]
    assert refused.value.code == "invalid_request" and "no longer available" in refused.value.message
    assert len(docs.redis.keys("hearth:job:*")) == queued
    assert client.conversations.items.list(conv.id).data == []
