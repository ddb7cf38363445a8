"""Across workers: a conversation's next turn goes to the worker that holds its saved state
while that worker is free or soon will be, to another when waiting would cost more than the
prefill, and to another when the holder dies. Each worker has its own STATE_DIR, as on two
machines: only the holder can restore the history."""

import asyncio
import json
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from api.jobs.queueing import REJECTED_USER_CAP, Admission, FairQueue, Hold, queue_key
from api.jobs.state_routing import release_held
from bench.rig import end_tokens
from devstack import MODEL, Process, RedisServer, Stack, unused_db, wait_for
from hearth.contract import WORKERS_KEY, JobPayload, Message, SamplingParams, held_queue, job_key, worker_key
from hearth.job_record import JobRecord, enqueue, rq_job, rq_queue
from hearth.state_routes import StateHolder
from tests.test_metrics import scrape, value
from tests.test_states import QUESTION, SYSTEM, lines, saved
from worker.route_keys import RouteKeys
from worker.settings import embedded_model_path

LONG_ANSWER = 4000  # tokens: a minute of SmolLM2 on one thread, far longer than the history's prefill


def two_workers(make_stack: Callable[..., Stack], tmp_path: Path) -> tuple[Stack, list[Process]]:
    s = make_stack()
    workers = [s.start_worker(STATE_DIR=str(tmp_path / f"states-{i}")) for i in range(2)]
    s.start_api()
    return s, workers


def name(worker: Process) -> str:
    return worker.env["WORKER_NAME"]


def client_of(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0, timeout=120)


def ask(s: Stack, messages: list[dict[str, str]]) -> tuple[str, str, int]:
    """The answer, the worker that gave it (its job's record) and the cached prompt tokens."""
    done = client_of(s).chat.completions.create(model="any", messages=messages, max_tokens=8, temperature=0)
    assert done.usage is not None and done.usage.prompt_tokens_details is not None
    worker = s.redis.hget(job_key(done.id.removeprefix("chatcmpl-")), "worker")
    assert worker is not None
    return done.choices[0].message.content or "", worker.decode(), done.usage.prompt_tokens_details.cached_tokens or 0


def first_turn(s: Stack, workers: list[Process]) -> tuple[list[dict[str, str]], Process]:
    """A conversation's first turn, its history for the next, and the worker that holds it once
    that worker has measured its prefill speed (the api's estimate needs it)."""
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    answer, served, _ = ask(s, history)
    (holder,) = [w for w in workers if name(w) == served]
    wait_for(lambda: json.loads(s.redis.hget(worker_key(served), "prefill_tps") or b"0") > 0, 10, "the holder's prefill speed", holder)
    return [*history, {"role": "assistant", "content": answer}], holder


def turn(history: list[dict[str, str]], question: str) -> list[dict[str, str]]:
    return [*history, {"role": "user", "content": question}]


@contextmanager
def long_answer(s: Stack, messages: list[dict[str, str]]) -> Iterator[str]:
    """A chat generating LONG_ANSWER tokens while the block runs (its job id); leaving the
    block drops the stream, which cancels it."""
    body = {"model": "any", "messages": messages, "max_tokens": LONG_ANSWER, "stream": True,
            "logit_bias": {str(t): b for t, b in end_tokens(embedded_model_path()).items()}}
    with httpx.stream("POST", f"{s.base_url}/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        yield response.headers["x-job-id"]


def test_the_next_turn_goes_to_the_worker_holding_its_state_though_the_other_is_free(make_stack, tmp_path: Path) -> None:
    s, workers = two_workers(make_stack, tmp_path)
    history, holder = first_turn(s, workers)
    # Both idle: without routing, the worker that has waited longest (the other) would take it.
    _, served, cached = ask(s, turn(history, "And what should they eat?"))
    assert served == name(holder) and cached > 0
    assert any(line.get("msg") == "took a turn routed here by its saved state" for line in map(json.loads, holder.log().splitlines()))
    assert value(scrape(s), "hearth_state_routes_total", outcome="holder") == 1


def test_a_busy_holder_is_passed_over_when_waiting_would_cost_more_than_the_prefill(make_stack, tmp_path: Path) -> None:
    s, workers = two_workers(make_stack, tmp_path)
    history, holder = first_turn(s, workers)
    (other,) = [w for w in workers if w is not holder]
    # The conversation's own long answer keeps its holder busy (it is routed there too).
    with long_answer(s, turn(history, "Write a very long story about the coop.")) as long_job:
        wait_for(lambda: s.redis.hget(job_key(long_job), "worker") == name(holder).encode()
                 and json.loads(s.redis.hget(worker_key(name(holder)), "remaining") or b"0") > 0, 30, "the holder busy", holder)
        _, served, cached = ask(s, turn(history, "And what should they eat?"))
    assert served == name(other) and cached == 0  # evaluated from scratch, at once, on the free worker
    samples = scrape(s)
    assert value(samples, "hearth_state_routes_total", outcome="holder") == 1  # the long answer
    assert value(samples, "hearth_state_routes_total", outcome="fallback") == 1


def test_a_turn_waiting_for_a_dead_holder_is_answered_by_another_worker(make_stack, tmp_path: Path) -> None:
    s, workers = two_workers(make_stack, tmp_path)
    history, holder = first_turn(s, workers)
    (other,) = [w for w in workers if w is not holder]
    holder.stop(signal.SIGKILL)
    # Its heartbeat lives on for a moment: the turn may be routed to it, then moved to the
    # shared queue when the heartbeat expires; either way the other worker answers it.
    answer, served, _ = ask(s, turn(history, "And what should they eat?"))
    assert served == name(other) and answer
    samples = scrape(s)
    routed = value(samples, "hearth_state_routes_total", outcome="holder")
    assert value(samples, "hearth_state_routes_total", outcome="released") == routed
    assert routed + value(samples, "hearth_state_routes_total", outcome="fallback") == 1


def route_keys(s: Stack) -> set[bytes]:
    return set(s.redis.keys("hearth:state:*"))


# One tier, which holds one conversation's state but not two. In memory, a state goes in when
# the next job replaces it, so the first is evicted by the third conversation.
ONE_TIER = {"disk": {"STATE_CACHE_MB": "0", "STATE_DISK_MB": "3"}, "memory": {"STATE_DISK_MB": "0", "STATE_CACHE_MB": "3"}}


@pytest.mark.parametrize("tier", ONE_TIER)
def test_a_state_evicted_from_every_tier_takes_its_route_with_it(make_stack, tier: str) -> None:
    """Other conversations evict the first's state, whose route goes, so its next turn waits
    for nobody (the shared queue, no routing)."""
    s = make_stack()
    worker = s.start_worker(**ONE_TIER[tier])
    s.start_api()
    history, _ = first_turn(s, [worker])
    wait_for(lambda: len(route_keys(s)) == 1, 30, "the first route", worker)
    (first_key,) = route_keys(s)
    for bird in ("ducks", "geese"):
        ask(s, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION.replace("chickens", bird)}])
    wait_for(lambda: first_key not in route_keys(s), 30, "the first route removed", worker)
    assert route_keys(s)  # the others', which their states keep
    assert lines(worker, "state route removed: no saved state serves it any more")

    done = client_of(s).chat.completions.create(model="any", messages=turn(history, "And what should they eat?"), max_tokens=8)
    assert s.redis.hget(job_key(done.id.removeprefix("chatcmpl-")), "queue") == SHARED.encode()
    samples = scrape(s)
    assert value(samples, "hearth_state_routes_total", outcome="holder") == 0
    assert value(samples, "hearth_state_routes_total", outcome="fallback") == 0


def test_a_restarted_worker_is_still_the_holder_of_the_states_it_saved(make_stack, tmp_path: Path) -> None:
    s, workers = two_workers(make_stack, tmp_path)
    history, holder = first_turn(s, workers)
    (other,) = [w for w in workers if w is not holder]
    wait_for(saved(holder, 1), 30, "the state on disk", holder)
    holder_id = s.redis.hget(worker_key(name(holder)), "holder")
    holder.stop()
    restarted = s.start_worker(STATE_DIR=holder.env["STATE_DIR"])  # under a new WORKER_NAME
    assert s.redis.hget(worker_key(name(restarted)), "holder") == holder_id
    # A chat too short to keep, so that a worker has measured its prefill speed again.
    ask(s, [{"role": "user", "content": "Hello"}])
    wait_for(lambda: any(json.loads(s.redis.hget(worker_key(name(w)), "prefill_tps") or b"0") > 0 for w in (restarted, other)),
             10, "a prefill speed", restarted)
    _, served, cached = ask(s, turn(history, "And what should they eat?"))
    assert served == name(restarted) and cached > 0
    assert lines(restarted, "took a turn routed here by its saved state")
    assert value(scrape(s), "hearth_state_routes_total", outcome="holder") == 1


def test_two_workers_sharing_a_state_dir_are_two_holders(make_stack, tmp_path: Path) -> None:
    s = make_stack()
    workers = [s.start_worker(STATE_DIR=str(tmp_path / "states")) for _ in range(2)]
    ids = {s.redis.hget(worker_key(name(w)), "holder") for w in workers}
    assert len(ids) == 2 and None not in ids


def test_a_server_kept_conversations_next_turn_goes_to_its_holder(make_stack, tmp_path: Path) -> None:
    """The api composes the turn's history from the stored items: its digest is the one the
    holder wrote for the messages it answered."""
    s, _ = two_workers(make_stack, tmp_path)
    client = client_of(s)
    conv = client.conversations.create()

    def conversation_turn(question: str) -> tuple[str, int]:
        done = client.chat.completions.create(model="any", max_tokens=8, temperature=0, extra_body={"conversation": conv.id},
                                              messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
        wait_for(lambda: client.conversations.retrieve(conv.id).model_extra["hearth_job_id"] is None, 30, "the answer filed")
        worker = s.redis.hget(job_key(done.id.removeprefix("chatcmpl-")), "worker")
        assert worker is not None and done.usage is not None and done.usage.prompt_tokens_details is not None
        return worker.decode(), done.usage.prompt_tokens_details.cached_tokens or 0

    holder, _ = conversation_turn(QUESTION)
    wait_for(lambda: json.loads(s.redis.hget(worker_key(holder), "prefill_tps") or b"0") > 0, 10, "the holder's prefill speed")
    served, cached = conversation_turn("And what should they eat?")
    assert served == holder and cached > 0
    assert value(scrape(s), "hearth_state_routes_total", outcome="holder") == 1


# Admission and release on a real Redis, without workers: where a routed turn waits, what
# it counts towards, and when it moves to the shared queue.
SHARED = f"interactive:{MODEL}"
HOLDER = "holder-1"
HELD = held_queue(MODEL, HOLDER)


def admit(redis: Redis, owner: str, hold: Hold | None, per_user: int = 1) -> tuple[int, bool, str]:
    """Admits a chat of `owner`, offered `hold`: its position, whether it went to the
    holder's queue, its id."""
    payload = JobPayload(job_id=uuid.uuid4().hex, messages=[Message(role="user", content="hi")], params=SamplingParams(), model=MODEL)
    queue = FairQueue(SHARED, redis, per_user, 32)
    record = JobRecord(id=payload.job_id, owner=owner, model=MODEL, created=0, queue=SHARED)
    pipe = redis.pipeline()
    queue.admit(rq_job(queue, payload, 600), Admission(record, 600, 600, "", hold, (HELD,)), pipe)
    position, routed = map(int, pipe.execute()[-1])
    return position, bool(routed), payload.job_id


def ids(redis: Redis, queue: str) -> list[str]:
    return [i.decode() for i in redis.lrange(queue_key(queue), 0, -1)]


def release(url: str) -> None:
    async def run() -> None:
        async with AsyncRedis.from_url(url) as redis:
            await release_held(redis)
    asyncio.run(run())


def test_a_routed_turn_passes_nobody_and_counts_towards_its_owners_cap(redis_server: RedisServer) -> None:
    url = unused_db(redis_server)
    redis = Redis.from_url(url)
    hold = Hold(HELD, 600)
    # Nobody waits: the turn waits for its holder, in its queue, and its record says so.
    assert admit(redis, "alice", hold)[:2] == (1, True)
    (alice,) = ids(redis, HELD)
    assert redis.hget(job_key(alice), "queue") == HELD.encode() and redis.hget(job_key(alice), "hold_until")
    # It counts towards alice's cap of one waiting request, wherever it waits.
    assert admit(redis, "alice", None)[0] == REJECTED_USER_CAP
    # Bob waits in the shared queue: carol's turn is not routed past him.
    assert admit(redis, "bob", None)[:2] == (1, False)
    assert admit(redis, "carol", hold)[:2] == (2, False)
    assert ids(redis, HELD) == [alice]


def test_background_jobs_count_towards_no_cap_and_wait_behind_requests(redis_server: RedisServer) -> None:
    redis = Redis.from_url(unused_db(redis_server))
    queue = rq_queue(SHARED, redis)
    # Alice's uploads queued the embedding of their chunks (api.jobs.service.submit_background).
    background = []
    for _ in range(3):
        payload = JobPayload(job_id=uuid.uuid4().hex, messages=[Message(role="user", content="hi")], params=SamplingParams(), model=MODEL)
        record = JobRecord(id=payload.job_id, owner="alice", model=MODEL, created=0, queue=SHARED, background=True)
        with redis.pipeline() as pipe:
            pipe.multi()
            enqueue(pipe, queue, record, payload, 600)
            pipe.execute()
        background.append(payload.job_id)
    # Her request is within her cap of one, and first in line; the others' go before them too.
    position, _, alice = admit(redis, "alice", None)
    assert position == 1
    assert admit(redis, "alice", None)[0] == REJECTED_USER_CAP  # her request counts
    position, _, bob = admit(redis, "bob", None)
    assert position == 2
    assert ids(redis, SHARED) == [alice, bob, *background]


def test_a_turn_leaves_its_holders_queue_when_its_time_is_up_or_the_holder_is_gone(redis_server: RedisServer) -> None:
    url = unused_db(redis_server)
    redis = Redis.from_url(url)
    now = float(redis.time()[0])
    redis.zadd(WORKERS_KEY, {HOLDER: now + 600})  # the holder's heartbeat, alive
    _, _, waiting = admit(redis, "alice", Hold(HELD, 600))
    _, _, late = admit(redis, "bob", Hold(HELD, 0))  # may wait no longer: the prefill would be done
    release(url)
    assert ids(redis, HELD) == [waiting] and ids(redis, SHARED) == [late]
    assert redis.hget(job_key(late), "queue") == SHARED.encode()
    redis.zadd(WORKERS_KEY, {HOLDER: now - 1})  # its heartbeat expired
    _, _, newer = admit(redis, "carol", None, per_user=2)
    release(url)
    # To the front of the shared queue: it was next in line when it was routed.
    assert ids(redis, SHARED) == [waiting, late, newer] and not ids(redis, HELD)
    release(url)  # the dead holder's empty queue is forgotten
    assert queue_key(HELD).encode() not in redis.smembers("rq:queues")


def test_a_route_key_goes_when_no_state_carries_it_and_only_while_it_names_this_holder(redis_server: RedisServer) -> None:
    redis = Redis.from_url(unused_db(redis_server))
    mine, still_held, theirs = "hearth:state:m:mine", "hearth:state:m:held", "hearth:state:m:theirs"
    for key, holder in [(mine, HOLDER), (still_held, HOLDER), (theirs, "another")]:
        redis.set(key, StateHolder(holder=holder, tokens=100).model_dump_json())
    keys = RouteKeys(redis, HOLDER)
    keys.hold([mine, still_held, still_held, theirs])  # `still_held` by two states (memory and disk)
    keys.release([mine, still_held, theirs])
    keys.close()  # after the deletions due
    assert not redis.exists(mine)
    assert redis.exists(still_held)  # a state still serves it
    assert redis.exists(theirs)  # another worker answered the conversation since
