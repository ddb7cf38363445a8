from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from devstack import RedisServer, Stack, add_user, serve
from tools.shaped_gguf import write_shaped_gguf


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
    yield from serve(redis_server, log_dir)


@pytest.fixture(scope="module")
def secured(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    """A stack with accounts on, one per test module (people made in one module stay there)."""
    yield from serve(redis_server, log_dir, AUTH="on")


@pytest.fixture(scope="module")
def boss(secured: Stack) -> str:
    """The key of an admin of `secured`."""
    return add_user(secured, "boss", admin=True)


@pytest.fixture
def make_stack(redis_server: RedisServer, log_dir: Path) -> Iterator:
    """A private stack for tests that configure, kill or restart its processes."""
    made: list[Stack] = []

    def make(**env: str) -> Stack:
        s = Stack(redis_server, None, log_dir, **env)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def mistral_tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small GGUF with Mistral Instruct's layout and real chat template (random weights)."""
    return str(write_shaped_gguf(tmp_path_factory.mktemp("models") / "mistral-tiny.gguf", "mistral-tiny"))


@pytest.fixture(scope="session")
def qwen_tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same small model with Qwen 2.5 Instruct's real chat template, which takes tools."""
    return str(write_shaped_gguf(tmp_path_factory.mktemp("models") / "qwen-tiny.gguf", "mistral-tiny", template="qwen2.5"))


@pytest.fixture(scope="session")
def llama31_tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same small model with Llama 3.1 Instruct's real chat template (tools as JSON)."""
    return str(write_shaped_gguf(tmp_path_factory.mktemp("models") / "llama31-tiny.gguf", "mistral-tiny", template="llama3.1"))


@pytest.fixture(scope="session")
def mistral03_tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same small model with Mistral Instruct v0.3's real chat template (`[TOOL_CALLS]`)."""
    return str(write_shaped_gguf(tmp_path_factory.mktemp("models") / "mistral03-tiny.gguf", "mistral-tiny", template="mistral-v0.3"))
