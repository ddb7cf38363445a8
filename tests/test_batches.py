"""Batches through the official openai client: files, batches, their lines' lifecycle, and a
batch sharing the worker with chats."""

import itertools
import json
import signal
from collections import Counter

import httpx
import openai
import pytest

from devstack import BATCH, RedisServer, Stack, add_user, wait_for
from hearth.contract import ATTEMPT_SEPARATOR
from tests.batches import file_lines, jsonl, pause_a_line, request_line, run_batch, wait_status
from tests.chats import NO_END

QUESTIONS = ["What is 2+2?", "Name a colour.", "Say hello.", "What is the capital of France?"]


def line_status(stack: Stack, job_id: str) -> str | None:
    raw = stack.redis.hget(f"hearth:job:{job_id}", "status")
    return raw.decode() if raw else None


@pytest.fixture
def batch_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=60)


def test_batch_answers_every_line_with_a_chat_completion(batch_client: openai.OpenAI) -> None:
    lines = [request_line(f"q{i}", q) for i, q in enumerate(QUESTIONS)]
    batch_id = run_batch(batch_client, lines, metadata={"purpose": "test"})
    assert batch_client.batches.retrieve(batch_id).status in ("validating", "in_progress", "finalizing", "completed")
    batch = wait_status(batch_client, batch_id, ("completed", "failed"))
    assert batch.status == "completed", batch
    assert batch.request_counts.total == 4 and batch.request_counts.completed == 4 and batch.request_counts.failed == 0
    assert batch.metadata == {"purpose": "test"} and batch.error_file_id is None
    assert batch.in_progress_at and batch.completed_at and batch.completed_at >= batch.created_at
    out = file_lines(batch_client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in out) == ["q0", "q1", "q2", "q3"]
    for line in out:
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        assert 0 < body["usage"]["completion_tokens"] <= 8
    assert batch.usage.output_tokens == sum(line["response"]["body"]["usage"]["completion_tokens"] for line in out)
    output_file = batch_client.files.retrieve(batch.output_file_id)
    assert output_file.purpose == "batch_output" and output_file.bytes > 0
    assert batch_id in [b.id for b in batch_client.batches.list(limit=100).data]


def test_bad_lines_go_to_the_error_file_while_good_ones_complete(batch_client: openai.OpenAI) -> None:
    lines = [
        request_line("good-1", "Say yes."),
        b"{not json",
        request_line("good-1", "Duplicate id."),
        {**request_line("other-url", "Hi"), "url": "/v1/embeddings"},
        request_line("bad-body", "Hi", temperature=7),
        {"method": "POST", "url": "/v1/chat/completions", "body": {}},
        request_line("good-2", "Say no."),
        request_line("in-conversation", "And then?", conversation="conv_x"),  # its history would be left out (regression: it was)
    ]
    batch = wait_status(batch_client, run_batch(batch_client, lines), ("completed", "failed"))
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (8, 2, 6)
    assert sorted(line["custom_id"] for line in file_lines(batch_client, batch.output_file_id)) == ["good-1", "good-2"]
    errors = {(e["custom_id"], e["error"]["code"]) for e in file_lines(batch_client, batch.error_file_id)}
    assert errors == {(None, "invalid_json"), ("good-1", "duplicate_custom_id"), ("other-url", "invalid_url"),
                      ("bad-body", "invalid_request"), (None, "missing_custom_id"), ("in-conversation", "invalid_request")}
    assert {e.line for e in batch.errors.data} == {2, 3, 4, 5, 6, 8}


def test_a_line_that_cannot_fit_the_context_is_an_error_line(make_stack) -> None:
    s = make_stack(N_CTX="256")
    s.start_worker()
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=60)
    batch = wait_status(client, run_batch(client, [request_line("long", "word " * 400), request_line("short", "Hi")]), ("completed",))
    assert [line["custom_id"] for line in file_lines(client, batch.output_file_id)] == ["short"]
    [error] = file_lines(client, batch.error_file_id)
    assert error["custom_id"] == "long" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(("content", "status", "needle"), [
    (b"", 400, "empty"),
    (b"name,prompt\nalice,hello\n", 400, "not JSONL"),
    (b"{}\n" * 3000, 413, "larger than"),
])
def test_unusable_files_are_refused_at_upload(make_stack, content: bytes, status: int, needle: str) -> None:
    s = make_stack(BATCH_MAX_FILE_BYTES="4096")
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("in.jsonl", content), purpose="batch")
    assert caught.value.status_code == status and needle in caught.value.message
    assert client.files.list().data == []


def test_too_many_lines_are_refused_at_upload(make_stack) -> None:
    s = make_stack(BATCH_MAX_LINES="3")
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError, match="at most 3"):
        client.files.create(file=("in.jsonl", jsonl([request_line(f"{i}", "hi") for i in range(4)])), purpose="batch")


def test_files_are_listed_read_and_deleted(batch_client: openai.OpenAI) -> None:
    data = jsonl([request_line("a", "hi")])
    created = batch_client.files.create(file=("mine.jsonl", data), purpose="batch")
    assert created.filename == "mine.jsonl" and created.bytes == len(data) and created.purpose == "batch"
    assert batch_client.files.retrieve(created.id).id == created.id
    assert batch_client.files.content(created.id).content == data
    assert created.id in [f.id for f in batch_client.files.list().data]
    assert batch_client.files.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        batch_client.files.retrieve(created.id)


def test_cancel_mid_batch_keeps_finished_lines_and_reports_the_rest(make_stack) -> None:
    s = make_stack()
    s.start_worker()
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=60)
    lines = [request_line("quick", "Say hi.", 4)] + [request_line(f"long-{i}", "Tell a story.", 4000, logit_bias=NO_END) for i in range(4)]
    batch_id = run_batch(client, lines)
    wait_for(lambda: client.batches.retrieve(batch_id).request_counts.completed == 1, 120, "the quick line")
    wait_for(lambda: bool(s.redis.hgetall("hearth:running")), 60, "a long line to run")
    assert client.batches.cancel(batch_id).status == "cancelling"
    batch = wait_status(client, batch_id, ("cancelled",), 60)
    assert batch.cancelling_at and batch.cancelled_at
    assert [line["custom_id"] for line in file_lines(client, batch.output_file_id)] == ["quick"]
    errors = file_lines(client, batch.error_file_id)
    assert sorted(e["custom_id"] for e in errors) == [f"long-{i}" for i in range(4)]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 4)
    assert not s.redis.hgetall("hearth:running")  # the running line stopped
    assert s.redis.llen(f"rq:queue:{BATCH}") == 0


def test_a_batch_past_its_window_expires(make_stack) -> None:
    s = make_stack()
    s.start_worker()
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=60)
    lines = [request_line(f"long-{i}", "Tell a story.", 200, logit_bias=NO_END) for i in range(6)]
    batch = wait_status(client, run_batch(client, lines, window="3s"), ("expired", "completed"), 120)
    assert batch.status == "expired" and batch.expired_at
    done = {line["custom_id"] for line in file_lines(client, batch.output_file_id)}
    expired = file_lines(client, batch.error_file_id)
    assert expired and {e["error"]["code"] for e in expired} == {"batch_expired"}
    assert done | {e["custom_id"] for e in expired} == {f"long-{i}" for i in range(6)}
    assert batch.request_counts.completed == len(done) and batch.request_counts.failed == len(expired)


def test_users_see_only_their_own_files_and_batches(make_stack) -> None:
    s = make_stack(AUTH="on")
    s.start_worker()
    s.start_api()
    alice = openai.OpenAI(base_url=s.base_url, api_key=add_user(s, "alice"), max_retries=0, timeout=60)
    bob = openai.OpenAI(base_url=s.base_url, api_key=add_user(s, "bob"), max_retries=0, timeout=60)
    batch_id = run_batch(alice, [request_line("a", "hi", 2)])
    batch = wait_status(alice, batch_id, ("completed",))
    file_id = batch.input_file_id
    for call in (lambda: bob.batches.retrieve(batch_id), lambda: bob.batches.cancel(batch_id),
                 lambda: bob.files.retrieve(file_id), lambda: bob.files.content(file_id),
                 lambda: bob.files.content(batch.output_file_id), lambda: bob.files.delete(file_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert bob.batches.list().data == [] and bob.files.list().data == []
    with pytest.raises(openai.BadRequestError):
        bob.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert alice.files.retrieve(file_id).id == file_id


def test_a_chat_pauses_a_batch_line_which_resumes_with_the_same_text(make_stack) -> None:
    s = make_stack(EVENT_INTERVAL_MS="0")
    s.start_worker()
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=120)
    body = request_line("long", "Write about the sea.", 150, temperature=0, seed=7, logit_bias=NO_END)["body"]
    reference = client.chat.completions.create(**body).choices[0].message.content
    batch_id = run_batch(client, [{"custom_id": "long", "method": "POST", "url": "/v1/chat/completions", "body": body}])

    run = pause_a_line(s, client, batch_id, min_events=20)
    chat_id, line_events = run.chat_id, [(int(str(e.id).split("-")[0]), json.loads(e.data)) for e in run.followed]
    [out] = file_lines(client, run.batch.output_file_id)
    assert out["response"]["body"]["choices"][0]["message"]["content"] == reference
    assert out["response"]["body"]["usage"]["completion_tokens"] == 150

    # By Redis's stream timestamps: the line gave way at once, and generated nothing while the
    # chat ran; then it resumed where it was.
    chat_events = [(int(i.decode().split("-")[0]), json.loads(f[b"event"])) for i, f in s.redis.xrange(f"hearth:job:{chat_id}:events")]
    assert line_events[-1][1]["type"] == "done"
    paused_at = next(t for t, e in line_events if e["type"] == "requeued")
    chat_started = next(t for t, e in chat_events if e["type"] == "started")
    chat_done = next(t for t, e in chat_events if e["type"] == "done")
    assert paused_at <= chat_started
    assert not [e for t, e in line_events if chat_started <= t <= chat_done and e["type"] == "token"]
    assert [e["reason"] for _, e in line_events if e["type"] == "requeued"] == ["paused"]
    resumed = [json.loads(line_) for line_ in s.logs().splitlines() if '"job resumed"' in line_]
    assert len(resumed) == 1 and resumed[0]["evaluated_tokens"] <= 1 and resumed[0]["resumed_tokens"] >= 20  # the events seen before the chat, less `started`


def _completed_runs(stack: Stack) -> Counter[str]:
    """How many times each job ran to its end, from every worker's log."""
    ran: Counter[str] = Counter()
    for text in stack.logs().splitlines():
        if text.startswith("{") and '"job completed"' in text:
            ran[json.loads(text)["job_id"]] += 1
    return ran


def test_a_killed_worker_mid_batch_loses_no_line_and_runs_none_twice(make_stack) -> None:
    s = make_stack()
    worker = s.start_worker()
    s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=60)
    lines = [request_line(f"l{i}", "Count to twenty.", 40, logit_bias=NO_END) for i in range(5)]
    batch_id = run_batch(client, lines)
    wait_for(lambda: client.batches.retrieve(batch_id).request_counts.completed >= 1 and bool(s.redis.hgetall("hearth:running")), 120, "a line mid-run")
    worker.stop(signal.SIGKILL)
    s.start_worker()
    batch = wait_status(client, batch_id, ("completed", "failed"), 300)
    assert batch.status == "completed" and batch.request_counts.completed == 5 and batch.request_counts.failed == 0
    out = file_lines(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in out) == [f"l{i}" for i in range(5)]
    assert all(line["response"]["body"]["usage"]["completion_tokens"] == 40 for line in out)
    ran = _completed_runs(s)
    assert len(ran) == 5 and set(ran.values()) == {1}, ran
    assert s.api is not None and "batch line requeued" in s.api.log()


def test_an_api_restart_mid_batch_finishes_the_batch(make_stack) -> None:
    s = make_stack()
    s.start_worker()
    api = s.start_api()
    client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=60)
    batch_id = run_batch(client, [request_line(f"l{i}", "Count.", 30, logit_bias=NO_END) for i in range(4)])
    wait_for(lambda: client.batches.retrieve(batch_id).request_counts.completed >= 1, 120, "a first line")
    api.stop(signal.SIGKILL)
    s.start_api()
    batch = wait_status(client, batch_id, ("completed",), 240)
    assert batch.request_counts.completed == 4
    ran = _completed_runs(s)
    assert len(ran) == 4 and set(ran.values()) == {1}


def test_the_reaper_ends_an_unwatched_chat_of_a_dead_worker(make_stack) -> None:
    s = make_stack()
    worker = s.start_worker()
    api = s.start_api()
    body = {"model": "any", "messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 4000, "logit_bias": NO_END}
    with httpx.stream("POST", f"{s.base_url}/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        job_id = r.headers["X-Job-Id"]
        wait_for(lambda: line_status(s, job_id) == "running", 60, "the chat to run")
        api.stop(signal.SIGKILL)  # nobody follows the job now
    worker.stop(signal.SIGKILL)
    s.start_api()
    wait_for(lambda: line_status(s, job_id) == "failed", 30, "the reaper to end the chat")
    last = json.loads(s.redis.xrevrange(f"hearth:job:{job_id}:events", count=1)[0][1][b"event"])
    assert last["type"] == "error" and last["code"] == "worker_lost"
    assert not s.redis.hexists("hearth:running", job_id)


def test_users_batches_take_turns_in_bounded_slices_and_leave_chats_uncapped(make_stack) -> None:
    s = make_stack(AUTH="on", BATCH_SLICE="1", MAX_QUEUED="1", MAX_WAITING_PER_USER="1")
    s.start_worker()
    s.start_api()
    alice = openai.OpenAI(base_url=s.base_url, api_key=add_user(s, "alice"), max_retries=0, timeout=60)
    bob = openai.OpenAI(base_url=s.base_url, api_key=add_user(s, "bob"), max_retries=0, timeout=60)
    first = run_batch(alice, [request_line(f"a{i}", "Count.", 12, logit_bias=NO_END) for i in range(4)])
    wait_for(lambda: s.redis.hlen("hearth:running") == 1, 60, "alice's first line to run")
    second = run_batch(bob, [request_line(f"b{i}", "Count.", 12, logit_bias=NO_END) for i in range(4)])
    depth: list[int] = []

    def ended() -> bool:
        # Fed lines only: a line a chat paused goes back to the queue's front as a new attempt.
        depth.append(sum(ATTEMPT_SEPARATOR not in rq_id.decode() for rq_id in s.redis.lrange(f"rq:queue:{BATCH}", 0, -1)))
        return all(b.status == "completed" for b in (alice.batches.retrieve(first), bob.batches.retrieve(second)))

    # A chat while both batches wait: batch lines count against no interactive cap.
    chat = bob.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert chat.choices[0].message.content is not None
    wait_for(ended, 240, "both batches")
    assert max(depth) <= 1  # BATCH_SLICE: one line waits in the queue at a time
    first_starts: dict[str, str] = {}  # job id -> user, in the order lines first started (a paused one starts again)
    for line in s.logs().splitlines():
        if line.startswith("{") and '"job started"' in line and "batch:" in line:
            record = json.loads(line)
            first_starts.setdefault(record["job_id"], record["user"])
    starts = list(first_starts.values())
    assert starts[0] == "alice" and sorted(starts) == ["alice"] * 4 + ["bob"] * 4
    # Turns: while both have lines left, nobody starts more than two in a row (alice's second
    # may be queued before bob's batch is read).
    both = min(max(i for i, user in enumerate(starts) if user == name) for name in ("alice", "bob"))
    runs = [len(list(run)) for _, run in itertools.groupby(starts[:both + 1])]
    assert max(runs) <= 2, starts


def test_a_redis_restart_mid_batch_loses_no_line(own_redis, log_dir) -> None:
    s = Stack(own_redis, 0, log_dir)
    try:
        s.start_worker()
        s.start_api()
        client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=2, timeout=60)
        batch_id = run_batch(client, [request_line(f"l{i}", "Count.", 30, logit_bias=NO_END) for i in range(4)])
        wait_for(lambda: client.batches.retrieve(batch_id).request_counts.completed >= 1, 120, "a first line")
        own_redis.stop()
        own_redis.start()
        batch = wait_status(client, batch_id, ("completed", "failed"), 300)
        assert batch.status == "completed" and batch.request_counts.completed == 4, batch
        assert sorted(line["custom_id"] for line in file_lines(client, batch.output_file_id)) == [f"l{i}" for i in range(4)]
        ran = _completed_runs(s)
        assert len(ran) == 4 and set(ran.values()) == {1}
    finally:
        s.stop()


@pytest.fixture
def own_redis(log_dir):
    server = RedisServer(log_dir)
    yield server
    server.stop()


def test_completion_window_with_a_non_ascii_digit_is_400_not_500(stack: Stack) -> None:
    """str.isdigit() took "²h" for a number and int() then failed: a 500 (found by test_fuzz)."""
    key = {"Authorization": "Bearer unused"}
    for window in ("²h", "١h", "h", "0h", "24x", " 24h"):
        r = httpx.post(f"{stack.base_url}/batches", headers=key, timeout=30,
                       json={"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": window})
        assert r.status_code == 400 and r.json()["error"]["param"] == "completion_window", (window, r.text)


def test_batch_metadata_has_openais_bounds(stack: Stack) -> None:
    """16 pairs, keys of at most 64 characters, values of at most 512: the conversations' bounds,
    declared once (api.conversations.schemas.Metadata)."""
    key = {"Authorization": "Bearer unused"}
    body = {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    for metadata in ({str(i): "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}):
        r = httpx.post(f"{stack.base_url}/batches", headers=key, timeout=30, json={**body, "metadata": metadata})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("metadata"), r.text
    r = httpx.post(f"{stack.base_url}/batches", headers=key, timeout=30, json={**body, "metadata": {"k" * 64: "v" * 512}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_file_id", r.text  # within bounds: on to the missing file
