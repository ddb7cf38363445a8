"""Saved model states on disk: a conversation's history is not evaluated again after the
worker restarts or its model is swapped out and back, a damaged or foreign state file is
never restored (and a damaged one is removed), and the folder stays within its bound."""

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from devstack import MODEL, Process, Stack, wait_for
from hearth.contract import METRICS_KEY
from hearth.metrics import StateCounter
from tests.batches import request_line, run_batch, wait_status
from tests.test_metrics import scrape, value
from ui.status import summary
from worker import state_file
from worker.settings import embedded_model_path

SYSTEM = "You are Hearthy, a patient assistant for the Lovelace family. Answer briefly and kindly."
QUESTION = ("Our family keeps chickens in the garden. Tell me, step by step, how to build a small wooden coop "
            "that keeps them warm in winter, which tools and materials we need, and how to clean it each week.")


def client_of(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0, timeout=120)


def first_turn(s: Stack, model: str = "any") -> tuple[list[dict[str, str]], int]:
    """One answered turn; the history for the next, and the first turn's prompt tokens."""
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    done = client_of(s).chat.completions.create(model=model, messages=history, max_tokens=12, temperature=0)
    assert done.usage is not None
    history += [{"role": "assistant", "content": done.choices[0].message.content or ""},
                {"role": "user", "content": "And what should they eat?"}]
    return history, done.usage.prompt_tokens


def next_turn(s: Stack, history: list[dict[str, str]], model: str = "any") -> tuple[str, int, int]:
    """The next turn's answer, prompt tokens and cached tokens."""
    done = client_of(s).chat.completions.create(model=model, messages=history, max_tokens=8, temperature=0)
    assert done.usage is not None and done.usage.prompt_tokens_details is not None
    assert done.choices[0].finish_reason in ("stop", "length")
    return done.choices[0].message.content or "", done.usage.prompt_tokens, done.usage.prompt_tokens_details.cached_tokens or 0


def lines(worker: Process, message: str) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, worker.log().splitlines()) if line.get("msg") == message]


def state_files(s: Stack) -> list[Path]:
    return sorted(s.states.glob(f"*{state_file.SUFFIX}"))


def saved(worker: Process, n: int) -> Callable[[], bool]:
    return lambda: len(lines(worker, "state saved")) >= n


def test_a_restarted_worker_restores_the_conversation_from_disk(make_stack) -> None:
    s = make_stack()
    worker = s.start_worker()
    s.start_api()
    history, first_prompt = first_turn(s)
    wait_for(saved(worker, 1), 30, "the first turn's state on disk", worker)
    (path,) = state_files(s)
    assert state_file.read_header(path).data_len > 0
    worker.stop()

    restarted = s.start_worker()
    _, prompt, cached = next_turn(s, history)
    assert first_prompt < cached < prompt  # the whole first turn came from disk, only the new message was evaluated
    (restore,) = lines(restarted, "state restored")
    assert restore["source"] == "disk" and restore["bytes"] > 0 and restore["restore_s"] >= 0
    assert QUESTION not in restarted.log() and SYSTEM not in restarted.log()  # sizes and times, never content
    metrics = scrape(s)
    assert value(metrics, "hearth_state_restores_total", tier="disk") == 1
    assert value(metrics, "hearth_state_misses_total") >= 1  # the first turn found nothing
    assert value(metrics, "hearth_state_bytes", worker=restarted.env["WORKER_NAME"], tier="disk") > 0
    # The status page shows each worker's states in memory and on disk.
    status = httpx.get(f"{s.base_url}/status", timeout=30).json()
    (shown,) = status["workers"]
    assert shown["state_disk_bytes"] > 0 and shown["state_memory_bytes"] >= 0
    assert re.search(r"saved states [\d.]+ MiB in memory, [1-9][\d.]* MiB on disk", summary(status))


def flip_data_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def flip_token(path: Path) -> None:
    header = state_file.read_header(path)
    raw = bytearray(path.read_bytes())
    raw[header.data_offset - header.routes_len - 4] ^= 0x01  # in the last token: the header checksum covers it
    path.write_bytes(bytes(raw))


def saved_conversation(make_stack: Callable[..., Stack]) -> tuple[Stack, list[dict[str, str]], Path]:
    """A stack whose worker answered a first turn, saved its state and stopped: the history
    for the next turn and the state's file."""
    s = make_stack()
    worker = s.start_worker()
    s.start_api()
    history, _ = first_turn(s)
    wait_for(saved(worker, 1), 30, "the first turn's state on disk", worker)
    worker.stop()
    (path,) = state_files(s)
    return s, history, path


def test_a_damaged_state_file_is_removed_and_the_turn_answered_from_scratch(make_stack) -> None:
    s, history, path = saved_conversation(make_stack)
    whole = path.read_bytes()
    for damage in (truncate, flip_data_byte, flip_token):
        path.write_bytes(whole)
        damage(path)
        restarted = s.start_worker()
        answer, _, cached = next_turn(s, history)
        assert answer and cached < 32, damage.__name__  # nothing restored: the history evaluated again
        assert not lines(restarted, "state restored"), damage.__name__
        (ignored,) = lines(restarted, "saved state ignored and removed")
        assert ignored["file"] == path.name, damage.__name__
        assert not path.exists()
        wait_for(saved(restarted, 1), 30, "the turn's own state", restarted)
        restarted.stop()
        for stray in state_files(s):
            if stray != path:
                stray.unlink()


def test_another_models_state_is_never_restored(make_stack) -> None:
    """A whole, valid state of another model file, under the name this conversation's own
    would have: never restored into this one."""
    s, history, path = saved_conversation(make_stack)
    header, data = state_file.read(path, state_file.model_identity(Path(embedded_model_path())))
    foreign = state_file.write(s.states, bytes(32), header.tokens, header.routes, data)  # the same bytes, said to be another model's
    path.unlink()
    foreign.rename(path)

    restarted = s.start_worker()
    answer, _, cached = next_turn(s, history)
    assert answer and cached < 32 and not lines(restarted, "state restored")


def test_disk_use_stays_within_its_bound(make_stack) -> None:
    s = make_stack()
    worker = s.start_worker(STATE_DISK_MB="8")  # about two of these conversations' states
    s.start_api()
    client = client_of(s)
    for i in range(8):
        messages = [{"role": "user", "content": f"Conversation {i}: {QUESTION}"}]
        client.chat.completions.create(model="any", messages=messages, max_tokens=2)
        wait_for(saved(worker, i + 1), 30, f"conversation {i}'s state", worker)
        assert sum(p.stat().st_size for p in state_files(s)) <= 8 * 2**20
    kept = state_files(s)
    assert 1 <= len(kept) < 8
    # The least recently used went first: the newest conversation is kept.
    newest = lines(worker, "state saved")[-1]["tokens"]
    assert any(len(state_file.read_header(p).tokens) == newest for p in kept)


def test_a_model_swapped_out_and_back_restores_its_states(make_stack, mistral_tiny: str) -> None:
    s = make_stack(DEFAULT_MODEL="")
    s.start_api()
    # A budget of one model at a time: asking Mistral unloads SmolLM2 and its states in memory.
    worker = s.start_worker(MODELS=f"{embedded_model_path()},{mistral_tiny}", N_CTX="1024")
    history, first_prompt = first_turn(s, MODEL)
    first_turn(s, "mistral-tiny")
    wait_for(saved(worker, 2), 30, "both models' states on disk", worker)
    assert len(lines(worker, "model unloaded")) == 1

    _, prompt, cached = next_turn(s, history, MODEL)
    assert first_prompt < cached < prompt
    (restore,) = lines(worker, "state restored")
    assert restore["source"] == "disk"
    assert s.redis.hget(METRICS_KEY, StateCounter.RESTORES_DISK.value) == b"1"
    # Mistral's state holds the same conversation's start in its own tokens: never offered to SmolLM2.
    models = {state_file.read_header(p).model for p in state_files(s)}
    assert len(models) == 2


def test_many_conversations_share_one_saved_system_prompt(make_stack) -> None:
    """A new conversation that starts with a saved one's system prompt restores that prefix."""
    s = make_stack()
    worker = s.start_worker(STATE_CACHE_MB="0")  # from disk alone
    s.start_api()
    system = SYSTEM * 3  # long enough to be worth saving
    client = client_of(s)
    client.chat.completions.create(model="any", max_tokens=2, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": "Hello"}])
    wait_for(saved(worker, 1), 30, "the first conversation's state", worker)
    worker.stop()
    restarted = s.start_worker()
    done = client.chat.completions.create(model="any", max_tokens=2, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": "What is the weather like?"}])
    assert done.usage is not None and done.usage.prompt_tokens_details is not None
    assert (done.usage.prompt_tokens_details.cached_tokens or 0) > len(system) // 6  # the system prompt, at least
    assert lines(restarted, "state restored")[0]["source"] == "disk"


def test_a_batch_line_leaves_no_state_on_disk_and_a_chat_after_it_does(make_stack) -> None:
    """A night's batch must not evict the household's conversations from the disk."""
    s = make_stack()
    worker = s.start_worker()
    s.start_api()
    client = client_of(s)
    batch = run_batch(client, [request_line("line", QUESTION, max_tokens=2)])
    assert wait_status(client, batch, ("completed",)).request_counts.completed == 1
    _, prompt = first_turn(s)
    # States are written in order: had the line's been saved, it would be logged before the chat's.
    wait_for(lambda: any(line["tokens"] > prompt for line in lines(worker, "state saved")), 30, "the chat's state on disk", worker)
    assert len(lines(worker, "state saved")) == 1 and len(state_files(s)) == 1


def test_workers_sharing_a_folder_restore_each_others_states(make_stack) -> None:
    """Two workers on one machine with one STATE_DIR: the turn after one of them stops is
    taken by the other, which restores the state the first saved after it had started."""
    s = make_stack()
    workers = [s.start_worker(), s.start_worker()]
    s.start_api()
    history, first_prompt = first_turn(s)
    wait_for(lambda: any(lines(w, "state saved") for w in workers), 30, "the first turn's state on disk")
    (first,) = [w for w in workers if lines(w, "state saved")]
    first.stop()
    (other,) = [w for w in workers if w is not first]
    _, prompt, cached = next_turn(s, history)
    assert first_prompt < cached < prompt
    assert lines(other, "state restored")[0]["source"] == "disk"


@pytest.mark.parametrize(("constant", "other", "reason"), [("ENGINE_TAG", bytes(32), "another llama.cpp"), ("VERSION", 99, "format version 99")])
def test_a_state_of_another_format_or_llama_cpp_is_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           constant: str, other: object, reason: str) -> None:
    tokens = np.arange(40, dtype=np.int32)
    with monkeypatch.context() as patched:  # as another version of Hearth or llama.cpp would write it
        patched.setattr(state_file, constant, other)
        path = state_file.write(tmp_path, b"m" * 32, tokens, frozenset(), b"state")
    with pytest.raises(state_file.Unusable, match=reason):
        state_file.read_header(path)
    routes = frozenset({"hearth:state:m:1", "hearth:state:m:2"})
    header, data = state_file.read(state_file.write(tmp_path, b"m" * 32, tokens, routes, b"state"), b"m" * 32)
    assert data == b"state" and header.routes == routes


def test_a_removed_folder_costs_its_states_never_a_turn(make_stack) -> None:
    s = make_stack()
    worker = s.start_worker()
    s.start_api()
    shutil.rmtree(s.states)  # by hand, while the worker runs
    first_turn(s)
    wait_for(saved(worker, 1), 30, "the turn's state, in the folder made again", worker)
    assert len(state_files(s)) == 1
