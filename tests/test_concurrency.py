"""Several clients at once on one worker: everyone gets a whole answer, one generation at a time."""

import itertools
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from devstack import Stack
from tests.sse import job_events


def ask(client: openai.OpenAI, i: int) -> tuple[str, str, int]:
    raw = client.chat.completions.with_raw_response.create(
        model="any", messages=[{"role": "user", "content": f"Give me fact number {i} about the sea."}],
        max_tokens=24, stream=True, stream_options={"include_usage": True},
    )
    text, usage = "", 0
    for chunk in raw.parse():
        if chunk.usage:
            usage = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    return raw.headers["x-job-id"], text, usage


@pytest.mark.parametrize("clients", [2, 5])
def test_concurrent_clients_all_get_complete_answers_one_at_a_time(stack: Stack, client: openai.OpenAI, clients: int) -> None:
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda i: ask(client, i), range(clients)))
    spans = []
    for job_id, text, usage in results:
        events = job_events(stack.base_url, job_id)
        assert events[-1].event == "done"
        assert text == "".join(e.json()["text"] for e in events if e.event == "token")
        assert usage == events[-1].json()["usage"]["completion_tokens"] > 0
        # The stream entry ids are Redis timestamps: the span from started to done.
        spans.append((int(events[0].id.split("-")[0]), int(events[-1].id.split("-")[0])))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"generations overlapped: {spans}"
