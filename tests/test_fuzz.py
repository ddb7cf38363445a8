"""The api fuzzed from its own OpenAPI schema (schemathesis) against the real stack, signed in
with a real user's key: no 5xx, no hung connection, every answer declared and matching the
schema (status, content type, body), and the worker still serving a real chat afterwards.

Bounded and repeatable: a fixed number of examples per operation, derandomized generation.
Generation is kept cheap without narrowing what is fuzzed: `max_tokens` (and
`max_output_tokens`) above a few is
lowered before sending (a valid value stays valid), and requests without one get the
stack's small DEFAULT_MAX_TOKENS.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.auths import AuthContext
from schemathesis.core.failures import Failure
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case
from schemathesis.hooks import HookContext

from api.app import create_app
from api.settings import ApiSettings
from devstack import RedisServer, Stack, add_user, serve

EXAMPLES = 25  # per operation: about two minutes on 2 cores
REQUEST_TIMEOUT_S = 30  # a hung connection fails its case instead of the whole run
MAX_TOKENS = 4
# Schema-valid input that only the server's state can refuse: a 400 naming one of these is
# the right answer, not a schema too loose. `after` and `input_file_id` name objects that must
# exist (an unknown cursor or file is the caller's mistake, as at OpenAI); a completion window
# past BATCH_LONGEST_WINDOW_S, token ids past the model's vocabulary and prompts past its
# window depend on settings and on the model a worker loaded; an uploaded `file` must be
# JSONL, which a multipart schema cannot say. Likewise a response's `input` past the window and
# its `previous_response_id` (it must exist; so must the caller's own response it names), and
# `background` without `store`: a pair of fields the body's JSON schema cannot relate. So are a
# chat's tools and what they exclude or must match: a `tool_choice` (`function_call`) naming a
# function offered, function names unique, `tools` or `functions` but not both, no `stop` nor
# JSON `response_format` beside them (a schema that cannot say "unique" or "one of those"). An
# embeddings request's `dimensions` must be its model's, its inputs within the model's length.
# A chat's `replace_from` needs its `conversation`, and a conversation's `items` attach files in
# a user's message only: more pairs the schema cannot relate.
STATEFUL_PARAMS = {"after", "input_file_id", "completion_window", "logit_bias", "messages", "file", "input",
                   "previous_response_id", "background", "tools", "functions", "tool_choice", "function_call", "stop",
                   "response_format", "dimensions", "replace_from", "items"}
# The fuzzer's API key, set by `fuzz_key` once the stack has added its user: schemathesis asks
# its auth provider at generation time, where fixtures cannot reach.
ACCOUNT: dict[str, str] = {}


@pytest.fixture(scope="module")
def fuzz_stack(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    # Cases run one at a time, each chat read to its end: one waiting job per user is enough.
    # Embeddings kept as cheap: a few short inputs per request (more are refused with 400 `input`).
    yield from serve(redis_server, log_dir, AUTH="on", DEFAULT_MAX_TOKENS=str(MAX_TOKENS), MAX_WAITING_PER_USER="1",
                     EMBEDDING_MAX_TOKENS="64", EMBEDDING_MAX_INPUTS="8")


@pytest.fixture(scope="module")
def fuzz_key(fuzz_stack: Stack) -> str:
    ACCOUNT["key"] = add_user(fuzz_stack, "fuzzer")
    return ACCOUNT["key"]


# The schema the api serves (test_the_served_schema_is_the_fuzzed_one), built here so that
# pytest can name a test per operation. (schemathesis's lazy `from_fixture`, which would load
# it from the running stack, uses a pytest attribute that pytest 9 removed.)
SCHEMA = create_app(ApiSettings()).openapi()
schema = schemathesis.openapi.from_dict(SCHEMA)


@schema.hook
def filter_failure(context: HookContext, failure: Failure, case: Case, response: Response) -> bool:
    """Drops only "valid data rejected" for a 400 that names a STATEFUL_PARAMS field, and an
    upload "accepted though invalid" whose file was generated as null: multipart carries it as
    the four bytes `null`, a valid text document (purpose user_data) that the api rightly keeps."""
    if (failure.title == "Schema-violating request accepted" and case.media_type == "multipart/form-data"
            and isinstance(case.body, dict) and case.body.get("file") is None):
        return False
    if failure.title != "Schema-valid request rejected" or response.status_code != 400:
        return True
    try:
        param = json.loads(response.content)["error"]["param"]
    except (ValueError, KeyError, TypeError):
        return True
    return str(param).split(".")[0] not in STATEFUL_PARAMS


@schema.auth(refresh_interval=None)
class FuzzerKey:
    """The real key replaces the token generated for the bearer scheme, so the operations
    themselves are reached; cases that test a missing or wrong key keep theirs, and the
    `ignored_auth` check re-sends accepted requests without it, and with a wrong one."""

    def get(self, case: Case, context: AuthContext) -> str | None:
        return ACCOUNT.get("key")  # None while pytest collects

    def set(self, case: Case, data: str, context: AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}  # type: ignore[assignment,dict-item]  # schemathesis types it CaseInsensitiveDict, takes a dict


def cheap(case: Case) -> None:
    if isinstance(case.body, dict):
        for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            if isinstance(case.body.get(field), int) and case.body[field] > MAX_TOKENS:
                case.body[field] = MAX_TOKENS


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          phases=[Phase.generate], suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case: Case, fuzz_stack: Stack, fuzz_key: str) -> None:
    cheap(case)
    # Every check schemathesis has, not_a_server_error and response_schema_conformance among them.
    case.call_and_validate(base_url=f"http://127.0.0.1:{fuzz_stack.api_port}", timeout=REQUEST_TIMEOUT_S)


def test_the_served_schema_is_the_fuzzed_one(fuzz_stack: Stack) -> None:
    assert httpx.get(f"http://127.0.0.1:{fuzz_stack.api_port}/openapi.json", timeout=10).json() == SCHEMA


def test_the_worker_still_serves_after_the_fuzz(fuzz_stack: Stack, fuzz_key: str) -> None:
    r = httpx.post(f"{fuzz_stack.base_url}/chat/completions", timeout=120, headers={"Authorization": f"Bearer {fuzz_key}"},
                   json={"model": "any", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] and r.json()["usage"]["completion_tokens"] >= 1
    ready = httpx.get(f"http://127.0.0.1:{fuzz_stack.api_port}/readyz", timeout=10).json()
    assert ready["status"] == "ready" and ready["busy"] == 0, ready  # no fuzzed chat left running
