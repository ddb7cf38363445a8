"""The OpenAI client against the real stack: streaming, non-streaming, finish reasons, usage."""

import time

import httpx
import openai

from devstack import Stack

PROMPT = [{"role": "user", "content": "Write a short poem about a cat."}]


def test_stream_arrives_incrementally_and_matches_usage(client: openai.OpenAI) -> None:
    arrivals: list[tuple[float, str]] = []
    finish, usage = None, None
    stream = client.chat.completions.create(
        model="any", messages=PROMPT, stream=True, max_tokens=40, stream_options={"include_usage": True}, seed=1
    )
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                arrivals.append((time.monotonic(), choice.delta.content))
            finish = choice.finish_reason or finish
    assert len(arrivals) > 5, arrivals
    assert arrivals[-1][0] - arrivals[0][0] > 0.02  # spread over time, not one burst at the end
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 40
    assert usage.prompt_tokens > 5 and usage.total_tokens == usage.prompt_tokens + 40


def test_non_streamed_completion_names_its_job(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="any", messages=PROMPT, max_tokens=12)
    completion = raw.parse()
    job_id = raw.headers["x-job-id"]
    assert completion.id == f"chatcmpl-{job_id}"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 12
    assert completion.choices[0].message.content
    status = httpx.get(f"{stack.base_url}/jobs/{job_id}").json()
    assert status["status"] == "completed"


def test_end_of_turn_finishes_with_stop_and_leaks_no_template(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Reply with just the word yes."}], max_tokens=200, temperature=0
    )
    text = completion.choices[0].message.content or ""
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens < 200
    assert "<|im_end|>" not in text and "<|im_start|>" not in text


def test_stop_string_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 20, one number per line."}]
    full = client.chat.completions.create(model="any", messages=messages, max_tokens=60, temperature=0)
    text = full.choices[0].message.content or ""
    assert "7" in text and full.choices[0].finish_reason == "length", text
    cut = client.chat.completions.create(model="any", messages=messages, max_tokens=60, temperature=0, stop=["7", "zebra"])
    cut_text = cut.choices[0].message.content or ""
    assert cut.choices[0].finish_reason == "stop"
    assert "7" not in cut_text and "6" in cut_text, cut_text
    assert cut.usage.completion_tokens < 60


def test_models_reports_the_loaded_model_and_context(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert len(models) == 1
    assert models[0].id == "SmolLM2-135M-Instruct.Q4_1"
    assert models[0].model_extra["context_length"] == 8192


def test_same_seed_same_answer(client: openai.OpenAI) -> None:
    answers = {
        client.chat.completions.create(model="any", messages=PROMPT, max_tokens=20, seed=7, temperature=1).choices[0].message.content
        for _ in range(2)
    }
    assert len(answers) == 1
