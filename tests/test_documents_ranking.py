"""Long documents ranked with embeddings too (DOCUMENT_EMBEDDING_MODEL) through the whole stack
(api, worker, Redis, SmolLM2, the official openai client): each new document's chunk vectors
are made once, by an embedding job after its upload, kept with it and deleted with it; a
question none of whose words is in the document, but whose meaning is on one page, is answered
from that page with the setting on and not with it off (BM25 finds nothing: the parts read are
the first that fit). SmolLM2 is a chat model, mean-pooled: its vectors are weak, but
deterministic, and for this question its cosine ranks that page first."""

import base64
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import redis
from rq.job import Job

from devstack import MODEL, ROOT, RedisServer, Stack, add_user, serve, unused_db, wait_for
from hearth.contract import RQ_SERIALIZER
from hearth.documents import ChunkVectors, DocumentPage, DocumentText, chunk_vectors_key, document_key
from tests.test_accounts import api
from tools.sample_documents import pdf_with_pages
from worker.chunk_vectors import ChunkSimilarity, keep_vectors, made_with
from worker.documents import DEFAULT_CHUNKING, Chunking, TaskPrefixes, terms
from worker.embedder import Embedder, EmbeddingSpec
from worker.models import ModelFile, catalog
from worker.settings import WorkerSettings

DIMENSIONS = 576  # SmolLM2-135M's
QUESTION = "Which pet naps on the couch?"
PAGES = [
    "Bin day is Thursday. Recycling goes out every other week, green bins in spring and summer only.",
    "Our boiler was serviced in October by a heating engineer; its next service is due in autumn.",
    "Piano lessons for Emma happen every Tuesday evening at six, with Mrs Laurent at her house.",
    "Car insurance renews in March with our usual company; its policy number is in a blue folder.",
    "Water meter readings go to our council at each quarter's end.",
    "Grandma's birthday dinner is booked at an Italian restaurant for eight people.",
    "Internet router password is written under a modem in our hallway cupboard.",
    "Swimming club fees are paid by bank transfer before each school term begins.",
    "Spare fuses and light bulbs are kept in a drawer by our kitchen sink.",
    "Dentist appointments for both children are booked for early May at nine o'clock.",
    "Garden hose and watering cans are stored behind our garage door during winter.",
    "Passports expire in two years; renewal forms are filed with other travel papers.",
    "Electricity supplier changed last spring to a cheaper green tariff.",
    "Window cleaner comes every second Friday and is paid in cash.",
    "Library books must be returned within three weeks to avoid fines.",
    "Smoke alarm batteries were replaced in January; test them monthly.",
    "Neighbours at number twelve keep a spare key for emergencies.",
    "Bicycle lock combination is written in a notebook by our front door.",
    "Weekly groceries are ordered online every Sunday for Monday delivery.",
    "Chimney sweep visits once a year before winter starts.",
    "Holiday cottage in Wales is booked for a week in August.",
    "School uniforms are bought in July from a shop in town.",
    "Our cat Miso sleeps all afternoon curled up upon our sofa and gets fed twice a day.",
    "Recipes from Grandma are kept in a green box in our pantry.",
]
CAT_PAGE = 23
QUERY_PREFIX, CHUNK_PREFIX = "search_query: ", "search_document: "  # nomic-embed-text's


def serve_docs(redis_server: RedisServer, log_dir: Path, **env: str) -> Iterator[Stack]:
    """A 512-token window: the 24 pages (about 550 tokens whole, 850 as parts) do not fit, about half do."""
    yield from serve(redis_server, log_dir, AUTH="on", N_CTX="512", **env)


@pytest.fixture(scope="module")
def hybrid(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    yield from serve_docs(redis_server, log_dir, DOCUMENT_EMBEDDING_MODEL=MODEL)


@pytest.fixture(scope="module")
def prefixed(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    yield from serve_docs(redis_server, log_dir, DOCUMENT_EMBEDDING_MODEL=MODEL, DOCUMENT_EMBEDDING_QUERY_PREFIX=QUERY_PREFIX,
                          DOCUMENT_EMBEDDING_CHUNK_PREFIX=CHUNK_PREFIX)


@pytest.fixture(scope="module")
def lexical(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    yield from serve_docs(redis_server, log_dir)


def person(stack: Stack) -> tuple[str, openai.OpenAI]:
    name = f"kim-{time.monotonic_ns()}"
    return name, openai.OpenAI(base_url=stack.base_url, api_key=add_user(stack, name), max_retries=0, timeout=300)


def vectors(stack: Stack, file_id: str) -> tuple[ChunkVectors, np.ndarray] | None:
    meta, data = stack.redis.hmget(chunk_vectors_key(file_id), ["meta", "data"])
    if meta is None:
        return None
    found = ChunkVectors.model_validate_json(meta)
    return found, np.frombuffer(data, dtype="<f4").reshape(-1, found.dimensions)


def pages_read(client: openai.OpenAI, file_id: str) -> list[int]:
    messages: Any = [{"role": "user", "content": [{"type": "file", "file": {"file_id": file_id}}, {"type": "text", "text": QUESTION}]}]
    cited = (client.chat.completions.create(model="any", max_tokens=4, messages=messages).model_extra or {})["citations"]
    assert cited and all(c["file_id"] == file_id and c["chunk"] is not None for c in cited)  # parts, not the whole
    return [c["page"] for c in cited]


def test_the_question_shares_no_word_with_the_document() -> None:
    assert not set(terms(QUESTION)) & set(terms(" ".join(PAGES)))


def test_chunk_vectors_are_made_after_upload_and_rank_the_page_that_means_it(hybrid: Stack) -> None:
    _, client = person(hybrid)
    f = client.files.create(file=("house.pdf", pdf_with_pages(PAGES)), purpose="user_data")
    wait_for(lambda: vectors(hybrid, f.id) is not None, 300, "the document's chunk vectors")
    kept = vectors(hybrid, f.id)
    assert kept is not None
    meta, made = kept
    assert meta == ChunkVectors(model=MODEL, chunk_tokens=256, overlap_tokens=32, dimensions=DIMENSIONS)
    assert made.shape == (len(PAGES), DIMENSIONS)  # a page each: float32 bytes, not JSON
    assert np.allclose(np.linalg.norm(made, axis=1), 1, atol=1e-4)
    pages = pages_read(client, f.id)
    assert CAT_PAGE in pages and len(pages) < len(PAGES)
    client.files.delete(f.id)
    assert not hybrid.redis.exists(chunk_vectors_key(f.id))


def test_without_the_setting_nothing_is_embedded_and_bm25_reads_the_first_pages(lexical: Stack) -> None:
    _, client = person(lexical)
    f = client.files.create(file=("house.pdf", pdf_with_pages(PAGES)), purpose="user_data")
    pages = pages_read(client, f.id)
    assert CAT_PAGE not in pages and pages == list(range(1, len(pages) + 1))
    assert not lexical.redis.exists(chunk_vectors_key(f.id))


def test_an_inline_document_gets_its_chunk_vectors_too(hybrid: Stack) -> None:
    _, client = person(hybrid)
    data = base64.b64encode(b"Our cat Miso sleeps upon our sofa.").decode()
    messages: Any = [{"role": "user", "content": [{"type": "file", "file": {"file_data": data, "filename": "note.txt"}},
                                                  {"type": "text", "text": "Who sleeps there?"}]}]
    raw = client.chat.completions.with_raw_response.create(model="any", max_tokens=4, messages=messages)
    job: dict[str, Any] = Job.fetch(raw.headers["X-Job-Id"], connection=hybrid.redis, serializer=RQ_SERIALIZER).args[0]
    [document] = job["messages"][0]["documents"]
    wait_for(lambda: vectors(hybrid, document["document_id"]) is not None, 120, "the inline document's chunk vectors")


def test_a_chunk_is_embedded_after_its_task_prefix(prefixed: Stack) -> None:
    """DOCUMENT_EMBEDDING_CHUNK_PREFIX: a document's chunk vectors are the embedding of the
    prefix and the chunk's text, as `/v1/embeddings` makes it, not of the text alone."""
    _, client = person(prefixed)
    note = "Our cat Miso sleeps upon our sofa."
    f = client.files.create(file=("note.txt", note.encode()), purpose="user_data")
    wait_for(lambda: vectors(prefixed, f.id) is not None, 120, "the document's chunk vectors")
    kept = vectors(prefixed, f.id)
    assert kept is not None
    meta, [made] = kept
    assert meta.chunk_prefix == CHUNK_PREFIX
    with_prefix, alone = (np.array(e.embedding) for e in client.embeddings.create(model=MODEL, input=[CHUNK_PREFIX + note, note]).data)
    assert made @ with_prefix / np.linalg.norm(with_prefix) > 0.9999
    assert made @ alone / np.linalg.norm(alone) < 0.999


def test_revoking_a_person_deletes_their_chunk_vectors(hybrid: Stack) -> None:
    name, client = person(hybrid)
    f = client.files.create(file=("note.txt", b"Our cat Miso sleeps upon our sofa."), purpose="user_data")
    wait_for(lambda: vectors(hybrid, f.id) is not None, 120, "the document's chunk vectors")
    # The embedding is the owner's, counted as any of their requests is.
    wait_for(lambda: api(hybrid, client.api_key).get("/usage").json()["today"]["total"]["requests"] == 1, 30, "the job counted")
    subprocess.run([sys.executable, "-m", "api.accounts.cli", "users", "revoke", name], env=hybrid.env, cwd=ROOT, check=True,
                   capture_output=True)
    assert not hybrid.redis.exists(chunk_vectors_key(f.id))


def house(redis_server: RedisServer) -> tuple[redis.Redis, DocumentText, ModelFile]:
    """A Redis of its own holding document "d" (PAGES, for 600 s), and the SmolLM2 to embed with."""
    r = redis.Redis.from_url(unused_db(redis_server))
    doc = DocumentText(document_id="d", filename="house.txt", pages=[DocumentPage(number=n, text=t) for n, t in enumerate(PAGES, 1)])
    r.set(document_key("d"), doc.model_dump_json(), ex=600)
    (file,) = catalog(WorkerSettings(n_threads=1)).values()
    return r, doc, file


def test_vectors_count_only_where_made_as_this_worker_would_and_live_as_long_as_the_text(redis_server: RedisServer) -> None:
    """worker.chunk_vectors against a real Redis and SmolLM2: vectors of another model or other
    chunk sizes rank nothing; none are kept for a deleted document, nor after others made
    otherwise; kept ones expire with the text."""
    r, doc, file = house(redis_server)
    embedder = Embedder.load(file, EmbeddingSpec.of(file, 512), 1, 0)
    try:
        similarity = ChunkSimilarity(r, file.id, DEFAULT_CHUNKING, lambda model, loading: embedder)
        made = np.full((len(PAGES), DIMENSIONS), 1 / DIMENSIONS**0.5, dtype="<f4").tobytes()
        for meta, used in ((made_with(file.id, DEFAULT_CHUNKING, DIMENSIONS), True), (made_with("other", DEFAULT_CHUNKING, DIMENSIONS), False),
                           (made_with(file.id, Chunking(128, 16), DIMENSIONS), False)):
            pipe = r.pipeline()
            keep_vectors(pipe, "d", meta, 0, made)
            pipe.execute()
            assert 0 < r.pttl(chunk_vectors_key("d")) <= 600_000
            cosines = similarity.of({"d": doc}, QUESTION, 512, lambda model: None)
            assert (cosines["d"].shape == (len(PAGES),)) if used else cosines == {}
    finally:
        embedder.close()
    # An attempt that goes on from vectors made otherwise (another worker's chunks, at its
    # place) keeps nothing: its vectors would stand for the first chunks.
    half = len(made) // 2
    pipe = r.pipeline()
    keep_vectors(pipe, "d", made_with(file.id, DEFAULT_CHUNKING, DIMENSIONS), half, made[half:])
    pipe.execute()
    assert ChunkVectors.model_validate_json(r.hget(chunk_vectors_key("d"), "meta")) == made_with(file.id, Chunking(128, 16), DIMENSIONS)
    pipe = r.pipeline()
    keep_vectors(pipe, "gone", made_with(file.id, DEFAULT_CHUNKING, DIMENSIONS), 0, made)
    pipe.execute()
    assert not r.exists(chunk_vectors_key("gone"))


def test_a_question_is_embedded_after_its_task_prefix_and_ranks_only_vectors_made_with_the_same_chunk_prefix(
        redis_server: RedisServer) -> None:
    r, doc, file = house(redis_server)
    embedder = Embedder.load(file, EmbeddingSpec.of(file, 512), 1, 0)
    try:
        similarity = ChunkSimilarity(r, file.id, DEFAULT_CHUNKING, lambda model, loading: embedder, TaskPrefixes(QUERY_PREFIX, CHUNK_PREFIX))
        assert similarity.chunk_inputs(PAGES[:1]) == [CHUNK_PREFIX + PAGES[0]]
        made = np.random.default_rng(7).standard_normal((len(PAGES), DIMENSIONS)).astype("<f4")
        made /= np.linalg.norm(made, axis=1, keepdims=True)
        with_prefix, alone = (embedder.embed(embedder.tokens([text], None, truncate=True))[0] for text in (QUERY_PREFIX + QUESTION, QUESTION))
        for chunk_prefix, used in ((CHUNK_PREFIX, True), ("", False)):
            pipe = r.pipeline()
            keep_vectors(pipe, "d", made_with(file.id, DEFAULT_CHUNKING, DIMENSIONS, chunk_prefix), 0, made.tobytes())
            pipe.execute()
            cosines = similarity.of({"d": doc}, QUESTION, 512, lambda model: None)
            if used:
                assert np.allclose(cosines["d"], made @ with_prefix, atol=1e-5)
                assert not np.allclose(cosines["d"], made @ alone, atol=1e-3)
            else:
                assert cosines == {}
    finally:
        embedder.close()


def test_an_embedding_model_that_cannot_load_leaves_the_ranking_to_bm25(redis_server: RedisServer, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A damaged embedding model (its weights cut off: llama.cpp refuses to load it) fails no
    chat: the question is not embedded, and BM25 alone ranks the chunks."""
    r, doc, file = house(redis_server)
    pipe = r.pipeline()
    keep_vectors(pipe, "d", made_with(file.id, DEFAULT_CHUNKING, DIMENSIONS), 0, np.ones((len(PAGES), DIMENSIONS), dtype="<f4").tobytes())
    pipe.execute()
    cut = tmp_path / file.path.name
    with file.path.open("rb") as whole:
        cut.write_bytes(whole.read(8 * 2**20))  # its header and vocabulary, none of its weights
    damaged = replace(file, path=cut)
    similarity = ChunkSimilarity(r, file.id, DEFAULT_CHUNKING, lambda model, loading: Embedder.load(damaged, EmbeddingSpec.of(damaged, 512), 1, 0))
    with caplog.at_level(logging.WARNING, logger="worker.chunk_vectors"):
        assert similarity.of({"d": doc}, QUESTION, 512, lambda model: None) == {}
    assert "question not embedded: chunks ranked by BM25 alone" in caplog.text
