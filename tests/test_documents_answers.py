"""Questions about attached documents through the whole stack (api, worker, Redis, SmolLM2, the
official openai client): what the model was given of them, and the citations that say so."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import ValidationError

from api.conversations.schemas import OutputText
from devstack import RedisServer, Stack, serve, wait_for
from tools.sample_documents import NEEDLE_PAGE, long_pdf

QUESTION = "Where is the spare key to the blue shed hidden?"
NOTE = "Bin day is Thursday. The recycling goes out every other week, the green bin in spring and summer only."


@pytest.fixture(scope="module")
def docs(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    """A 768-token window (a short prompt to evaluate on a shared machine): the 200-page report
    is about 10,000 tokens, so only parts of it fit."""
    yield from serve(redis_server, log_dir, N_CTX="768")


@pytest.fixture(scope="module")
def ask(docs: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=docs.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def report(ask: openai.OpenAI) -> str:
    """The 200-page report whose one needed fact is on page 137, uploaded once."""
    return ask.files.create(file=("report.pdf", long_pdf()), purpose="user_data").id


def pages_cited(annotations: list[Any], file_id: str) -> list[int]:
    assert annotations and all(a["type"] == "file_citation" and a["file_id"] == file_id and a["filename"] == "report.pdf"
                               for a in annotations)
    assert all(a["chunk"] is not None for a in annotations)  # parts, not the whole report
    return [a["page"] for a in annotations]


def test_the_page_with_the_fact_is_among_the_parts_read(ask: openai.OpenAI, report: str) -> None:
    response = ask.responses.create(model="any", max_output_tokens=8, input=[{"role": "user", "content": [
        {"type": "input_file", "file_id": report}, {"type": "input_text", "text": QUESTION}]}])
    part = response.output[0].content[0]
    annotations = [a.model_dump() for a in part.annotations]
    pages = pages_cited(annotations, report)
    assert NEEDLE_PAGE in pages and len(pages) < 100
    assert pages == sorted(pages)  # in document order
    assert {a["index"] for a in annotations} == {len(part.text)}
    stored = ask.responses.retrieve(response.id).output[0].content[0]
    assert [a.model_dump() for a in stored.annotations] == annotations
    events = list(ask.responses.create(model="any", max_output_tokens=8, stream=True, input=[{"role": "user", "content": [
        {"type": "input_file", "file_id": report}, {"type": "input_text", "text": QUESTION}]}]))
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert pages_cited([a.model_dump() for a in done[0].content[0].annotations], report) == pages  # the same question: the same parts


def test_chat_completions_say_which_parts_were_read(ask: openai.OpenAI, report: str) -> None:
    messages: Any = [{"role": "user", "content": [{"type": "file", "file": {"file_id": report}}, {"type": "text", "text": QUESTION}]}]
    completion = ask.chat.completions.create(model="any", max_tokens=8, messages=messages)
    cited = (completion.model_extra or {})["citations"]
    assert NEEDLE_PAGE in pages_cited(cited, report)
    assert "index" not in cited[0]
    last = [c for c in ask.chat.completions.create(model="any", max_tokens=8, messages=messages, stream=True) if c.choices and c.choices[0].finish_reason]
    assert (last[0].model_extra or {})["citations"] == cited


def test_a_small_text_file_goes_in_whole(ask: openai.OpenAI) -> None:
    note = ask.files.create(file=("bins.txt", NOTE.encode()), purpose="user_data")
    messages: Any = [{"role": "user", "content": [{"type": "file", "file": {"file_id": note.id}}, {"type": "text", "text": "When is bin day?"}]}]
    completion = ask.chat.completions.create(model="any", max_tokens=8, messages=messages)
    assert (completion.model_extra or {})["citations"] == [
        {"type": "file_citation", "file_id": note.id, "filename": "bins.txt", "page": None, "chunk": None}]
    bare = ask.chat.completions.create(model="any", max_tokens=1, messages=[{"role": "user", "content": "When is bin day?"}])
    assert completion.usage and bare.usage and completion.usage.prompt_tokens - bare.usage.prompt_tokens > 30  # the note, all of it


def test_a_follow_up_retrieves_again_without_the_file(ask: openai.OpenAI, report: str) -> None:
    conversation = ask.conversations.create()
    first = ask.responses.create(model="any", max_output_tokens=8, conversation=conversation.id, input=[{"role": "user", "content": [
        {"type": "input_file", "file_id": report}, {"type": "input_text", "text": "What was the heating oil level on page 3?"}]}])
    first_pages = pages_cited([a.model_dump() for a in first.output[0].content[0].annotations], report)
    assert 3 in first_pages
    follow_up = ask.responses.create(model="any", max_output_tokens=8, conversation=conversation.id, input=QUESTION)
    pages = pages_cited([a.model_dump() for a in follow_up.output[0].content[0].annotations], report)
    assert NEEDLE_PAGE in pages and pages != first_pages

    def answers() -> list[Any]:
        return [i for i in ask.conversations.items.list(conversation.id, order="asc").data if i.role == "assistant"]

    wait_for(lambda: len(answers()) == 2, 30, "both answers filed in the conversation")
    kept = [[a.model_dump() for a in item.content[0].annotations] for item in answers()]
    assert [pages_cited(k, report) for k in kept] == [first_pages, pages]


def test_stored_text_keeps_file_citations_only() -> None:
    """A conversation's items (an import, a client's earlier output sent back) keep Hearth's
    bounded file citations; other annotations are not Hearth's and are left out."""
    cited = {"type": "file_citation", "file_id": "file-1", "filename": "a.pdf", "index": 3, "page": 2, "chunk": 5}
    part = OutputText.model_validate({"text": "Yes.", "annotations": [cited, {"type": "url_citation", "url": "http://x"}, "odd"]})
    assert [a.model_dump() for a in part.annotations] == [cited]
    with pytest.raises(ValidationError):
        OutputText.model_validate({"text": "Yes.", "annotations": [{**cited, "filename": "a" * 2000}]})


def test_a_stream_announces_each_citation_before_the_text_part_ends(ask: openai.OpenAI, report: str) -> None:
    """`response.output_text.annotation.added`, one per citation in order, between the last
    delta and `response.output_text.done`; the same again when the stored stream is replayed."""
    with ask.responses.create(model="any", max_output_tokens=8, stream=True, input=[{"role": "user", "content": [
            {"type": "input_file", "file_id": report}, {"type": "input_text", "text": QUESTION}]}]) as stream:
        events = list(stream)
    last = events[-1]
    assert last.type in ("response.completed", "response.incomplete")
    final = last.response
    part = final.output[0].content[0]
    assert part.type == "output_text"
    pages_cited([a.model_dump() for a in part.annotations], report)
    types = [e.type for e in events]
    added = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert [a.annotation_index for a in added] == list(range(len(part.annotations)))
    assert [a.annotation.model_dump() if a.annotation else None for a in added] == [a.model_dump() for a in part.annotations]
    assert {(a.item_id, a.output_index, a.content_index) for a in added} == {(final.output[0].id, 0, 0)}
    first = types.index("response.output_text.annotation.added")
    assert types[first - 1] == "response.output_text.delta"
    assert types[first + len(added)] == "response.output_text.done"
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers))  # a delta of several tokens skips numbers; none repeats
    assert numbers[first:first + len(added) + 1] == list(range(numbers[first], numbers[first] + len(added) + 1))
    again = [e for e in ask.responses.retrieve(final.id, stream=True) if e.type == "response.output_text.annotation.added"]
    assert [e.model_dump() for e in again] == [e.model_dump() for e in added]
