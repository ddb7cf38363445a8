import itertools
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.stack import RedisServer, Stack

_dbs = itertools.count(1)  # each stack gets its own Redis database: its own queues and keys


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    """The default stack shared by most tests: one worker, one api, SmolLM2."""
    s = Stack(redis_server, next(_dbs), log_dir)
    s.start_worker()
    s.start_api()
    yield s
    s.stop()


@pytest.fixture
def make_stack(redis_server: RedisServer, log_dir: Path) -> Iterator:
    """A private stack for tests that configure, kill or restart its processes."""
    made: list[Stack] = []

    def make(**env: str) -> Stack:
        s = Stack(redis_server, next(_dbs), log_dir, **env)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=60)
