"""`/v1/embeddings` through the official openai client, against the real stack: SmolLM2 (the
embedded chat model) embeds too, mean-pooled. Nothing here asserts what the vectors mean (a
135M chat model is no embedding model): their shape, norm, order and determinism only."""

import base64
import signal
import threading
from collections.abc import Callable

import httpx
import numpy as np
import openai
import pytest

from devstack import MODEL, Stack, wait_for
from tests.batches import file_lines, run_batch, wait_status

DIMENSIONS = 576  # SmolLM2-135M's embedding length
TEXTS = ["The cat sat on the mat.", "A lease is a contract.", "Paris is the capital of France."]


def vectors(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    assert [item.index for item in response.data] == list(range(len(response.data)))
    return np.array([item.embedding for item in response.data], dtype=np.float64)


def same_direction(a: np.ndarray, b: np.ndarray) -> bool:
    """The same input's vector, made in passes of other sizes: equal up to the arithmetic of
    another batch shape (llama.cpp's kernels add in another order), not bit for bit."""
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999


def test_texts_are_embedded_as_unit_vectors_in_order_with_usage(client: openai.OpenAI) -> None:
    response = client.embeddings.create(model=MODEL, input=TEXTS)  # the client asks for base64 and decodes it
    found = vectors(response)
    assert found.shape == (3, DIMENSIONS)
    assert np.allclose(np.linalg.norm(found, axis=1), 1, atol=1e-4)
    assert response.model == MODEL and response.object == "list"
    assert response.usage.prompt_tokens == response.usage.total_tokens > 3 * 5
    # Each input alone gets the vector it got among the others, and the same input always the same.
    alone = vectors(client.embeddings.create(model=MODEL, input=TEXTS[1]))
    assert alone.shape == (1, DIMENSIONS)
    assert same_direction(alone[0], found[1])
    assert not np.array_equal(found[0], found[1])


def test_float_and_base64_are_the_same_vectors(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=TEXTS, encoding_format="base64").http_response.json()
    assert all(isinstance(item.embedding[0], float) for item in floats.data)
    decoded = np.array([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in raw["data"]])
    assert decoded.shape == (3, DIMENSIONS)
    assert np.array_equal(decoded, vectors(floats).astype(np.float32))  # deterministic, bit for bit


def test_token_arrays_embed_as_their_text_does(client: openai.OpenAI, stack: Stack) -> None:
    text = vectors(client.embeddings.create(model=MODEL, input="hello world"))
    # SmolLM2 adds no BOS: "hello world" is these two tokens (checked against the worker's own count below).
    tokens = client.embeddings.create(model=MODEL, input=[[28120, 905], [28120, 905]])
    assert tokens.usage.prompt_tokens == 4
    assert same_direction(vectors(tokens)[0], text[0])
    one = client.embeddings.create(model=MODEL, input=[28120, 905])  # one token array
    assert len(one.data) == 1 and np.array_equal(vectors(one)[0], text[0])  # the same pass: the same bits


def test_models_say_which_embed(client: openai.OpenAI) -> None:
    [model] = [m for m in client.models.list().data if m.id == MODEL]
    assert model.capabilities == ["chat", "embeddings"] and model.dimensions == DIMENSIONS  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"dimensions": 256}, "dimensions", "576 dimensions"),
    ({"input": ""}, "input", "empty"),
    ({"input": []}, "input", "empty"),
    ({"input": ["a", ""]}, "input", "input 1 is empty"),
    ({"input": ["a", [1, 2]]}, "input", "all strings"),
    ({"input": [[1, 2], [3, 10**6]]}, "input.1", "vocabulary"),
    ({"input": ["short", "word " * 600]}, "input.1", "input[1] has 601 tokens"),
    ({"input": [[1] * 513]}, "input.0", "at most 512 tokens"),
    ({"input": ["x"] * 2049}, "input", "at most 2048 inputs"),
    ({"encoding_format": "int8"}, "encoding_format", ""),
])
def test_bad_requests_get_400_naming_the_field(client: openai.OpenAI, body: dict[str, object], param: str, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(**{"model": MODEL, "input": "text", **body})
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param and words in error["message"], error


def test_a_text_too_long_is_refused_before_it_is_queued(stack: Stack) -> None:
    queued = set(stack.redis.scan_iter("hearth:job:*"))
    response = httpx.post(f"{stack.base_url}/embeddings", json={"model": MODEL, "input": ["fits", "word " * 600]}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "input.1"
    assert "x-job-id" not in response.headers and set(stack.redis.scan_iter("hearth:job:*")) == queued


def test_an_unknown_name_goes_to_the_default_model_when_it_embeds(stack: Stack) -> None:
    # The stack's DEFAULT_MODEL (SmolLM2) embeds: it answers names it does not know, as for chats.
    response = httpx.post(f"{stack.base_url}/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, timeout=60)
    assert response.status_code == 200 and response.json()["model"] == MODEL


def test_a_chat_answers_first_while_a_big_embedding_job_runs(stack: Stack) -> None:
    """The embedding job gives way between two passes of the model: the chat starts within a
    pass, and the job then finishes with every vector, in order."""
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=600)  # minutes on a shared machine
    texts = [f"Sentence number {i} is about something else entirely, {i * 7} times over." for i in range(80)]  # 3 passes
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(r=client.embeddings.create(model=MODEL, input=texts)))
    thread.start()
    wait_for(lambda: stack.redis.hget(f"hearth:worker:{worker_name(stack)}", "state") == b'"busy"', 30, "the embedding job to run")
    chat = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
    assert chat.choices[0].message.content is not None
    assert "r" not in result  # the chat did not wait for the embeddings
    thread.join(300)
    embedded = vectors(result["r"])
    assert embedded.shape == (80, DIMENSIONS)
    assert "job paused for a chat" in stack.logs()
    alone = vectors(client.embeddings.create(model=MODEL, input=texts[-1]))
    assert same_direction(alone[0], embedded[-1])


def worker_name(stack: Stack) -> str:
    return next(stack.redis.scan_iter("hearth:worker:*")).decode().removeprefix("hearth:worker:")


def test_a_batch_of_embedding_lines(client: openai.OpenAI) -> None:
    lines = [{"custom_id": "floats", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": TEXTS}},
             {"custom_id": "b64", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": MODEL, "input": TEXTS[0], "encoding_format": "base64"}},
             {"custom_id": "bad", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": "x", "dimensions": 8}},
             {"custom_id": "too-long", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": ["x", "word " * 600]}}]
    batch = wait_status(client, run_batch(client, lines, endpoint="/v1/embeddings"), ("completed", "failed"))
    assert batch.status == "completed" and batch.request_counts.completed == 2 and batch.request_counts.failed == 2, batch
    out = {line["custom_id"]: line["response"] for line in file_lines(client, batch.output_file_id)}
    floats, b64 = out["floats"]["body"], out["b64"]["body"]
    assert out["floats"]["status_code"] == 200 and floats["object"] == "list" and floats["model"] == MODEL
    assert len(floats["data"]) == 3 and floats["usage"]["prompt_tokens"] > 0
    first = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert first.shape == (DIMENSIONS,) and same_direction(first.astype(np.float64), np.array(floats["data"][0]["embedding"]))
    errors = {line["custom_id"]: line for line in file_lines(client, batch.error_file_id)}
    assert "576 dimensions" in errors["bad"]["error"]["message"]  # refused at validation: never ran
    assert errors["too-long"]["response"]["status_code"] == 400  # refused by the worker, which counts a text's tokens
    assert "input[1] has 601 tokens" in errors["too-long"]["response"]["body"]["error"]["message"]
    assert batch.usage.input_tokens == floats["usage"]["prompt_tokens"] + b64["usage"]["prompt_tokens"]


def test_an_embedding_only_model_embeds_beside_the_chat_model(make_stack: Callable[..., Stack], mistral_tiny: str) -> None:
    """`EMBEDDING_MODELS` names a GGUF the worker embeds with (loaded for the first embedding
    job, in the memory budget), and no chat model embeds any more."""
    s = make_stack(DEFAULT_MODEL="")
    s.start_api()
    s.start_worker(EMBEDDING_MODELS=mistral_tiny, MODEL_MEMORY_BUDGET_MB="1024")
    listed = {m["id"]: m for m in httpx.get(f"{s.base_url}/models", timeout=10).json()["data"]}
    assert listed[MODEL]["capabilities"] == ["chat"] and listed["mistral-tiny"]["capabilities"] == ["embeddings"]
    assert not listed["mistral-tiny"]["loaded"] and listed["mistral-tiny"]["dimensions"] > 0
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=120)
    found = vectors(client.embeddings.create(model="mistral-tiny", input=TEXTS))
    assert found.shape == (3, listed["mistral-tiny"]["dimensions"]) and np.allclose(np.linalg.norm(found, axis=1), 1, atol=1e-4)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model=MODEL, input="x")  # the chat model does not embed here
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="mistral-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    # Both in memory now, and the chat model still answers.
    wait_for(lambda: {m["id"]: m["loaded"] for m in httpx.get(f"{s.base_url}/models", timeout=10).json()["data"]}
             == {MODEL: True, "mistral-tiny": True}, 10, "both models to be listed as loaded")
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2).choices


def test_a_client_that_leaves_cancels_its_embedding_job(stack: Stack) -> None:
    before = set(stack.redis.scan_iter("hearth:job:*"))
    texts = [f"Sentence number {i} keeps the worker busy for a while." for i in range(400)]
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        httpx.post(f"{stack.base_url}/embeddings", json={"model": MODEL, "input": texts}, timeout=httpx.Timeout(30, read=3))
    [job] = [k.decode() for k in set(stack.redis.scan_iter("hearth:job:*")) - before if k.count(b":") == 2]
    wait_for(lambda: stack.redis.hget(job, "status") == b"cancelled", 120, "the embedding job to be cancelled")  # within a pass
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{stack.api_port}/readyz").json()["busy"] == 0, 30, "an idle worker")


def test_an_embedding_line_whose_worker_died_is_run_again_whole(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    worker = s.start_worker()
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=60)
    texts = [f"Sentence number {i} keeps the worker busy for a while." for i in range(60)]
    line = {"custom_id": "many", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": texts}}
    batch_id = run_batch(client, [line], endpoint="/v1/embeddings")
    wait_for(lambda: bool(s.redis.hgetall("hearth:running")), 120, "the line to run")
    worker.stop(signal.SIGKILL)
    s.start_worker()
    batch = wait_status(client, batch_id, ("completed", "failed"), 600)
    assert batch.status == "completed" and batch.request_counts.completed == 1, batch
    [out] = file_lines(client, batch.output_file_id)
    found = np.array([item["embedding"] for item in out["response"]["body"]["data"]])
    assert found.shape == (60, DIMENSIONS) and np.allclose(np.linalg.norm(found, axis=1), 1, atol=1e-4)
    assert s.api is not None and "batch line requeued" in s.api.log()
