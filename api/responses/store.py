"""Stored responses (`/v1/responses` with `store: true`), per user, in Redis: the one module
that knows their keys.

A response is a Hearth job: its id is `resp_<job id>`, and while the job lives its status and
answer are the job's (hearth.lifecycle, the job's log). The record kept here is what the job
does not hold: the request (input, instructions, history, parameters), and once the job has
ended its outcome, filed by api.jobs.filing whoever is watching, so the response outlives its job
(`RESPONSE_RETENTION_S`). Every key carries its owner's name: another user's id is absent.
"""

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis as AsyncRedis

from api.conversations.schemas import Item, as_messages
from hearth.contract import DoneEvent, ErrorEvent, Message, ToolCall

RESPONSE_KEY = "hearth:resp:{owner}:{job_id}"  # hash: request (StoredResponse JSON), outcome (Outcome JSON); expires after the retention
ID_PREFIX = "resp_"
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # api.chat.service makes job ids as uuid4 hex


def response_id(job_id: str) -> str:
    return ID_PREFIX + job_id


def job_id_of(resp_id: str) -> str | None:
    """The job behind a response id; None for an id Hearth never made."""
    job_id = resp_id.removeprefix(ID_PREFIX)
    return job_id if resp_id.startswith(ID_PREFIX) and _JOB_ID.fullmatch(job_id) else None


class Outcome(BaseModel):
    """How the job ended, kept once its log has expired."""

    text: str
    final: Annotated[DoneEvent | ErrorEvent, Field(discriminator="type")]
    calls: list[ToolCall] = []  # the function calls the answer made


class StoredResponse(BaseModel):
    job_id: str
    created_at: int
    model: str
    instructions: str | None = None
    input: list[Item]  # this request's own input, as `input_items` lists it
    history: list[Message] = []  # the turns before it (previous response's or conversation's)
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    text_format: dict[str, Any] = {"type": "text"}
    metadata: dict[str, str] = {}
    previous_response_id: str | None = None
    conversation: str | None = None
    background: bool = False
    tools: list[dict[str, Any]] = []  # the function tools offered, as the request gave them
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    outcome: Outcome | None = None

    @property
    def id(self) -> str:
        return response_id(self.job_id)

    def turns(self, answer: str, calls: list[ToolCall]) -> list[Message]:
        """The conversation so far once `answer` (and its `calls`) is given: what
        `previous_response_id` continues."""
        return [*self.history, *as_messages(self.input, self.history), Message(role="assistant", content=answer, tool_calls=calls)]


# Sets a record's outcome unless the record was deleted meanwhile. KEYS: the record.
# ARGV: outcome JSON.
_FILE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'outcome', ARGV[1])
return 1
"""


class ResponseStore:
    def __init__(self, redis: AsyncRedis, retention_s: int):
        self._redis, self._retention_s = redis, retention_s
        self._file_script = redis.register_script(_FILE_LUA)

    @staticmethod
    def _key(owner: str, job_id: str) -> str:
        return RESPONSE_KEY.format(owner=owner, job_id=job_id)

    async def create(self, owner: str, record: StoredResponse) -> None:
        key = self._key(owner, record.job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "request", record.model_dump_json(exclude={"outcome"}))
            pipe.expire(key, self._retention_s)
            await pipe.execute()

    async def get(self, owner: str, job_id: str) -> StoredResponse | None:
        request, outcome = await self._redis.hmget(self._key(owner, job_id), ["request", "outcome"])
        if request is None:
            return None
        record = StoredResponse.model_validate_json(request)
        record.outcome = None if outcome is None else Outcome.model_validate_json(outcome)
        return record

    async def file(self, owner: str, job_id: str, outcome: Outcome) -> bool:
        """Keeps how the job ended; False when the response was deleted meanwhile."""
        return bool(await self._file_script(keys=[self._key(owner, job_id)], args=[outcome.model_dump_json()]))

    async def delete(self, owner: str, job_id: str) -> bool:
        return bool(await self._redis.delete(self._key(owner, job_id)))

    def _owner_keys(self, owner: str) -> AsyncIterator[bytes]:
        # A user name has no glob character nor colon (api.accounts.users): the pattern is theirs alone.
        return self._redis.scan_iter(match=self._key(owner, "*"), count=500)

    async def count_owner(self, owner: str) -> int:
        """How many responses `owner` has stored (what revoking them would delete)."""
        return len([key async for key in self._owner_keys(owner)])

    async def delete_owner(self, owner: str) -> int:
        """Deletes every response `owner` stored (their account is being deleted); how many."""
        keys = [key async for key in self._owner_keys(owner)]
        return int(await self._redis.delete(*keys)) if keys else 0
