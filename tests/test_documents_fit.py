"""The worker's answer to the api's pre-queue fit check counts attached documents as the job
will have them (worker.fit_check, worker.documents_prompt), through a real worker and Redis.

The documents' text is written to the stack's Redis by the test, as the api writes it after an
upload (hearth.documents): these tests are about the worker's composition, not the upload."""

import random
import uuid

from bench.retrieval import needle_document
from devstack import MODEL, Stack
from hearth.contract import FitReply, FitRequest, Message, fit_key
from hearth.documents import DocumentPage, DocumentRef, DocumentText, document_key
from hearth.lifecycle import redis_seconds

LETTER = DocumentText(document_id="file-letter", filename="letter.txt", pages=[DocumentPage(number=1, text=(
    "Dear neighbour, the street party is on Saturday the 14th from three o'clock. "
    "Please bring a dish to share and a chair. The road will be closed to cars from noon."))])
N_CTX = 8192  # SmolLM2's trained window, the stack's


def fit(stack: Stack, messages: list[Message], max_tokens: int | None = None) -> FitReply:
    reply_to = f"hearth:fit:reply:{uuid.uuid4().hex}"
    request = FitRequest(reply_to=reply_to, expires_at=redis_seconds(stack.redis.time()) + 30, messages=messages, max_tokens=max_tokens)
    stack.redis.rpush(fit_key(MODEL), request.model_dump_json())
    popped = stack.redis.blpop([reply_to], timeout=30)
    assert popped is not None, "no worker answered the fit check"
    return FitReply.model_validate_json(popped[1])


def store(stack: Stack, document: DocumentText) -> DocumentRef:
    stack.redis.set(document_key(document.document_id), document.model_dump_json())
    return DocumentRef(document_id=document.document_id, filename=document.filename)


def test_a_whole_document_counts_in_full(stack: Stack) -> None:
    question = "When is the street party?"
    bare = fit(stack, [Message(role="user", content=question)])
    attached = fit(stack, [Message(role="user", content=question, documents=[store(stack, LETTER)])])
    assert attached.fits
    assert attached.prompt_tokens - bare.prompt_tokens > 40  # the letter's tokens and its frame


def test_a_long_document_counts_the_parts_that_fit(stack: Stack) -> None:
    needle = needle_document(random.Random(7), 200, document_id=f"file-{uuid.uuid4().hex}")
    reply = fit(stack, [Message(role="user", content=needle.question, documents=[store(stack, needle.document)])], 100)
    assert reply.fits
    # Its best chunks up to DOCUMENT_RETRIEVAL_TOKENS (2,048 by default: about eight), counted in
    # the model's tokens with their frames and the question; far from the window they could fill.
    assert 1024 < reply.prompt_tokens <= 2048 + 400 < N_CTX - 100


def test_no_room_for_any_part_does_not_fit(stack: Stack) -> None:
    needle = needle_document(random.Random(8), 20, document_id=f"file-{uuid.uuid4().hex}")
    reply = fit(stack, [Message(role="user", content="pets " * 4000, documents=[store(stack, needle.document)])], 4000)
    assert not reply.fits
    assert "attached documents do not fit" in reply.message


def test_a_deleted_document_does_not_fit(stack: Stack) -> None:
    gone = DocumentRef(document_id="file-gone", filename="gone.pdf")
    reply = fit(stack, [Message(role="user", content="Summarise it.", documents=[gone])])
    assert not reply.fits
    assert "'gone.pdf'" in reply.message and "no longer available" in reply.message
    assert reply.code == "invalid_request"  # as the job's error would say (regression: context_length_exceeded)


def test_a_conversation_goes_on_without_an_earlier_turns_deleted_document(stack: Stack) -> None:
    gone = DocumentRef(document_id="file-gone-earlier", filename="gone.pdf")
    reply = fit(stack, [Message(role="user", content="Summarise it.", documents=[gone]), Message(role="assistant", content="It is short."),
                        Message(role="user", content="When is the street party?", documents=[store(stack, LETTER)])])
    assert reply.fits
