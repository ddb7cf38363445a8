"""Batches (OpenAI's Batches API): the store that alone knows a batch's Redis keys, and the
reading of an input file into lines.

A batch is a hash of the fields OpenAI's `batch` object has (plus its owner and counters that
scripts increment); its valid lines wait in a list until the scheduler (api.batches.runner)
queues them a few at a time; each line's result is filed once (a guard per line) into the
output or error list, from which the output and error files are written when it ends.
"""

import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.client import Pipeline

from api.chat.schemas import ChatCompletionRequest
from api.errors import HearthError
from api.responses.schemas import ResponseCreateRequest, as_responses_error
from api.responses.store import StoredResponse
from hearth.contract import EmbeddingPayload, JobPayload
from hearth.redis_client import members, text_hash, texts

BATCH_KEY = "hearth:batch:{batch_id}"  # hash: the batch object's fields, owner, counters
PENDING_KEY = "hearth:batch:{batch_id}:pending"  # list: PendingLine JSON, not yet queued
INFLIGHT_KEY = "hearth:batch:{batch_id}:inflight"  # set: job ids of queued or running lines
FILED_KEY = "hearth:batch:{batch_id}:filed"  # hash: line index -> 1, once its result is filed
OUTPUT_KEY = "hearth:batch:{batch_id}:output"  # list: output file lines
ERRORS_KEY = "hearth:batch:{batch_id}:errors"  # list: error file lines
OWNER_BATCHES_KEY = "hearth:batches:{owner}"  # sorted set: batch id -> created_at
ACTIVE_KEY = "hearth:batches:active"  # sorted set: batch id -> created_at, until it ends

CHAT_ENDPOINT, RESPONSES_ENDPOINT, EMBEDDINGS_ENDPOINT = "/v1/chat/completions", "/v1/responses", "/v1/embeddings"
ENDPOINTS = (CHAT_ENDPOINT, RESPONSES_ENDPOINT, EMBEDDINGS_ENDPOINT)
NOT_IN_BATCH = ("stream", "background", "previous_response_id", "conversation")  # Responses fields a line cannot use
CHAT_NOT_IN_BATCH = ("conversation",)  # chat fields a line cannot use: its history and its answer are the conversation's
ERRORS_SHOWN = 100  # line errors listed in the batch object's `errors`
_TIMES = ("in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
          "cancelling_at", "cancelled_at")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW = re.compile(r"([0-9]{1,12})([smhd])")


class BatchStatus(StrEnum):
    """OpenAI's batch statuses: validating -> in_progress -> finalizing -> completed, or failed
    (the input file), expired (its window), cancelling -> cancelled."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


def keys(batch_id: str) -> dict[str, str]:
    return {name: template.format(batch_id=batch_id) for name, template in (
        ("batch", BATCH_KEY), ("pending", PENDING_KEY), ("inflight", INFLIGHT_KEY), ("filed", FILED_KEY),
        ("output", OUTPUT_KEY), ("errors", ERRORS_KEY))}


def window_seconds(window: str, longest_s: int) -> int:
    """`completion_window` in seconds: OpenAI's `24h`, or any `<n>s|m|h|d` up to the longest."""
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses (a 500, once).
    match = _WINDOW.fullmatch(window)
    seconds = int(match[1]) * _UNITS[match[2]] if match else 0
    if not 0 < seconds <= longest_s:
        raise HearthError(400, f"completion_window must be a duration such as 24h, at most {longest_s} s.", param="completion_window")
    return seconds


class PendingLine(BaseModel):
    index: int  # 1-based line number in the input file
    custom_id: str
    payload: JobPayload | EmbeddingPayload
    response: StoredResponse | None = None  # a /v1/responses line: what its output line's `response` is made of
    legacy_functions: bool = False  # a chat line with the legacy `functions`: answered with `function_call`, as a chat is
    encoding_format: str | None = None  # a /v1/embeddings line: how its vectors are written


class LineError(BaseModel):
    """A line that cannot run: filed in the error file and listed in the batch's `errors`."""

    line: int
    custom_id: str | None
    code: str
    message: str
    param: str | None = None


def queue_line(redis: Redis, batch_id: str, line: PendingLine, enqueue: Callable[[Pipeline], None]) -> bool:
    """Move `line`, the batch's next, from its pending list into a queue, in one transaction
    that `enqueue` adds the line's job to; watched: if anything else took the line meanwhile,
    nothing happens (False)."""
    k = keys(batch_id)
    with redis.pipeline() as pipe:
        pipe.watch(k["pending"])
        head = pipe.lindex(k["pending"], 0)
        if head is None or PendingLine.model_validate_json(head).index != line.index:
            return False
        pipe.multi()
        pipe.lpop(k["pending"])
        pipe.sadd(k["inflight"], line.payload.job_id)
        enqueue(pipe)
        pipe.execute()
    return True


# A line's body as the PendingLine that runs it (index, custom_id given); raises the
# ValidationError or HearthError an interactive request with the same body would get.
LineMaker = Callable[[Any, int, str], PendingLine]


def _check_unused(request: ChatCompletionRequest | ResponseCreateRequest, fields: tuple[str, ...]) -> None:
    for name in fields:
        if getattr(request, name) not in (None, False):
            raise HearthError(400, f"{name}: not available in a batch line.", param=name)


def chat_lines(owner: str, endpoint: str, model_of: Callable[[str], str], check: Callable[[ChatCompletionRequest], None]) -> LineMaker:
    """Lines of chat completions or responses. `model_of(name)` gives the model that serves a
    request naming `name`; `check` raises what the operator's limits refuse."""

    def make(raw: Any, index: int, custom_id: str) -> PendingLine:
        if endpoint == CHAT_ENDPOINT:
            body, request = ChatCompletionRequest.model_validate(raw), None
            _check_unused(body, CHAT_NOT_IN_BATCH)
        else:
            request = ResponseCreateRequest.model_validate(raw)
            _check_unused(request, NOT_IN_BATCH)
            body = request.to_chat([])
        if any(request.file_parts() if request else body.file_parts()):  # read per request, not per batch line: not yet
            raise HearthError(400, "files (content parts of type file or input_file) are not available in a batch line.",
                              param="input" if request else "messages")
        try:
            check(body)
            messages, tools = body.contract_messages(), body.tool_use()
        except HearthError as exc:
            raise as_responses_error(exc) if request else exc from None
        payload = JobPayload(job_id=secrets.token_hex(16), messages=messages, params=body.sampling(),
                             model=model_of(body.model), user=owner, preemptible=True, tools=tools)
        response = request.stored(payload.job_id, int(time.time()), payload.model, [], [[] for _ in request.input]) if request else None
        return PendingLine(index=index, custom_id=custom_id, payload=payload, response=response, legacy_functions=body.legacy_functions)

    return make


def read_lines(data: bytes, endpoint: str, make: LineMaker) -> tuple[list[PendingLine], list[LineError]]:
    """The runnable lines of a batch input file and the errors of the others."""
    good: list[PendingLine] = []
    bad: list[LineError] = []
    seen: set[str] = set()
    for index, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            bad.append(LineError(line=index, custom_id=None, code="invalid_json", message="This line is not valid JSON."))
            continue
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            bad.append(LineError(line=index, custom_id=None, code="missing_custom_id", message="Each line needs a string custom_id.", param="custom_id"))
            continue
        if custom_id in seen:
            bad.append(LineError(line=index, custom_id=custom_id, code="duplicate_custom_id", message=f"custom_id {custom_id!r} appears on an earlier line.", param="custom_id"))
            continue
        seen.add(custom_id)
        if line.get("method", "POST") != "POST" or line.get("url") != endpoint:
            bad.append(LineError(line=index, custom_id=custom_id, code="invalid_url", message=f"This batch's lines must be POST {endpoint}.", param="url"))
            continue
        try:
            good.append(make(line.get("body"), index, custom_id))
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first.get("loc", ())) or None
            bad.append(LineError(line=index, custom_id=custom_id, code="invalid_request", message=f"body.{param}: {first.get('msg')}" if param else str(first.get("msg")), param=param and f"body.{param}"))
        except HearthError as exc:
            bad.append(LineError(line=index, custom_id=custom_id, code=exc.code or "invalid_request", message=f"body.{exc.message}", param=exc.param and f"body.{exc.param}"))
    return good, bad


@dataclass(frozen=True)
class BatchInfo:
    id: str
    owner: str
    fields: dict[str, str]

    @property
    def status(self) -> BatchStatus:
        return BatchStatus(self.fields["status"])

    def time(self, name: str) -> int | None:
        value = self.fields.get(name)
        return int(float(value)) if value else None

    def dump(self) -> dict[str, Any]:
        """The OpenAI `batch` object."""
        f = self.fields
        errors = json.loads(f.get("errors") or "[]")
        counts = {name: int(f.get(name, 0)) for name in ("total", "completed", "failed")}
        tokens_in, tokens_out = int(f.get("input_tokens", 0)), int(f.get("output_tokens", 0))
        return {
            "id": self.id, "object": "batch", "endpoint": f["endpoint"], "model": f.get("model") or None,
            "input_file_id": f["input_file_id"], "completion_window": f["completion_window"], "status": f["status"],
            "output_file_id": f.get("output_file_id") or None, "error_file_id": f.get("error_file_id") or None,
            "errors": {"object": "list", "data": errors} if errors else None,
            "created_at": int(f["created_at"]), **{name: self.time(name) for name in _TIMES},
            "request_counts": counts, "metadata": json.loads(f.get("metadata") or "null"),
            # Hearth's: the owner's quota holds its remaining lines back, until this time if it says.
            "quota_paused": "quota_paused_until" in f, "quota_paused_until": f.get("quota_paused_until") or None,
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        }


# Move a batch from one of the given statuses to another, stamping `<status>_at`; returns
# whether it moved. KEYS: the batch; ARGV: the new status, then the statuses it may leave.
_MOVE_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
for i = 2, #ARGV do
  if status == ARGV[i] then
    local t = redis.call('TIME')
    redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[1] .. '_at', t[1])
    return 1
  end
end
return 0
"""

# File one line's result once. KEYS: batch, filed, output, errors, inflight; ARGV: line index,
# 'output' or 'errors', the file line, input tokens, output tokens, job id ('' for a line that
# never ran). Returns 1 when filed now, 0 when it was filed before.
_FILE_LUA = """
local filed = redis.call('HSETNX', KEYS[2], ARGV[1], 1)
if filed == 1 then
  redis.call('RPUSH', ARGV[2] == 'output' and KEYS[3] or KEYS[4], ARGV[3])
  redis.call('HINCRBY', KEYS[1], ARGV[2] == 'output' and 'completed' or 'failed', 1)
  redis.call('HINCRBY', KEYS[1], 'input_tokens', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'output_tokens', ARGV[5])
end
if ARGV[6] ~= '' then redis.call('SREM', KEYS[5], ARGV[6]) end
return filed
"""


class BatchStore:
    def __init__(self, redis: AsyncRedis, retention_s: int):
        self._redis, self._retention = redis, retention_s

    async def create(self, owner: str, endpoint: str, input_file_id: str, window: str, window_s: int, metadata: dict[str, str] | None) -> BatchInfo:
        batch_id = f"batch_{secrets.token_hex(12)}"
        now = int(time.time())
        t = await self._redis.time()
        fields = {"owner": owner, "endpoint": endpoint, "input_file_id": input_file_id, "completion_window": window,
                  "status": BatchStatus.VALIDATING.value, "created_at": str(now), "expires_at": str(int(t[0]) + window_s),
                  "metadata": json.dumps(metadata), "total": "0", "completed": "0", "failed": "0"}
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys(batch_id)["batch"], mapping=fields)  # type: ignore[arg-type]  # redis-py's mapping keys are invariant: it refuses a dict[str, ...]
        pipe.zadd(OWNER_BATCHES_KEY.format(owner=owner), {batch_id: now})
        pipe.zadd(ACTIVE_KEY, {batch_id: now})
        await pipe.execute()
        return BatchInfo(batch_id, owner, fields)

    async def get(self, batch_id: str, owner: str | None = None) -> BatchInfo | None:
        """The batch, or None if it does not exist or (with `owner`) belongs to another."""
        raw = await self._redis.hgetall(keys(batch_id)["batch"])
        if not raw:
            return None
        fields = text_hash(raw)
        if owner is not None and fields["owner"] != owner:
            return None
        return BatchInfo(batch_id, fields["owner"], fields)

    async def page(self, owner: str, after: str | None, limit: int) -> tuple[list[BatchInfo], bool]:
        """The owner's batches, newest first, after the id `after`."""
        index = OWNER_BATCHES_KEY.format(owner=owner)
        ids = members(await self._redis.zrevrange(index, 0, -1))
        if after is not None:
            ids = ids[ids.index(after) + 1:] if after in ids else []
        out: list[BatchInfo] = []
        for batch_id in ids:
            info = await self.get(batch_id, owner)
            if info is None:
                await self._redis.zrem(index, batch_id)
                continue
            out.append(info)
            if len(out) > limit:
                break
        return out[:limit], len(out) > limit

    async def active(self) -> list[str]:
        return members(await self._redis.zrange(ACTIVE_KEY, 0, -1))

    async def move(self, batch_id: str, to: BatchStatus, *sources: BatchStatus) -> bool:
        return bool(await self._redis.eval(_MOVE_LUA, 1, keys(batch_id)["batch"], to, *sources))

    async def set(self, batch_id: str, **fields: str | int) -> None:
        await self._redis.hset(keys(batch_id)["batch"], mapping=fields)  # type: ignore[arg-type]  # redis-py's mapping keys are invariant: it refuses a dict[str, ...]

    async def unset(self, batch_id: str, *names: str) -> None:
        await self._redis.hdel(keys(batch_id)["batch"], *names)

    async def add_lines(self, batch_id: str, good: list[PendingLine], errors: list[LineError]) -> None:
        """The valid lines to run, and the line errors to show, at validation."""
        k = keys(batch_id)
        pipe = self._redis.pipeline(transaction=True)
        for start in range(0, len(good), 1000):
            pipe.rpush(k["pending"], *(line.model_dump_json() for line in good[start:start + 1000]))
        pipe.hset(k["batch"], mapping={"total": len(good) + len(errors), "model": good[0].payload.model if good else "",
                                       "errors": json.dumps([e.model_dump(exclude={"custom_id"}) for e in errors[:ERRORS_SHOWN]])})
        await pipe.execute()

    async def file(self, batch_id: str, index: int, kind: str, line: dict[str, Any], tokens: tuple[int, int] = (0, 0), job_id: str = "") -> bool:
        """File one line's result in the output or error file, once."""
        k = keys(batch_id)
        return bool(await self._redis.eval(_FILE_LUA, 5, k["batch"], k["filed"], k["output"], k["errors"], k["inflight"],
                                           index, kind, json.dumps(line), tokens[0], tokens[1], job_id))

    async def next_pending(self, batch_id: str) -> PendingLine | None:
        raw = await self._redis.lindex(keys(batch_id)["pending"], 0)
        return None if raw is None else PendingLine.model_validate_json(raw)

    async def take_pending(self, batch_id: str) -> list[PendingLine]:
        """Every line not yet queued, taken out (the batch is ending)."""
        k = keys(batch_id)["pending"]
        pipe = self._redis.pipeline(transaction=True)
        pipe.lrange(k, 0, -1)
        pipe.delete(k)
        raw, _ = await pipe.execute()
        return [PendingLine.model_validate_json(r) for r in raw]

    async def counts(self, batch_id: str) -> tuple[int, int]:
        """Lines waiting to be queued, and lines queued or running."""
        k = keys(batch_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.llen(k["pending"])
        pipe.scard(k["inflight"])
        pending, inflight = await pipe.execute()
        return int(pending), int(inflight)

    async def forget_inflight(self, batch_id: str, job_id: str) -> None:
        """A line's job that expired before it was filed is no longer waited for."""
        await self._redis.srem(keys(batch_id)["inflight"], job_id)

    async def inflight(self, batch_id: str) -> list[str]:
        return texts(await self._redis.smembers(keys(batch_id)["inflight"]))

    async def results(self, batch_id: str) -> tuple[list[bytes], list[bytes]]:
        k = keys(batch_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.lrange(k["output"], 0, -1)
        pipe.lrange(k["errors"], 0, -1)
        output, errors = await pipe.execute()
        return output, errors

    async def close(self, batch_id: str) -> None:
        """The batch has ended: drop its working keys; it is kept for the retention time."""
        k = keys(batch_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(k["pending"], k["inflight"], k["filed"], k["output"], k["errors"])
        pipe.expire(k["batch"], self._retention)
        pipe.zrem(ACTIVE_KEY, batch_id)
        await pipe.execute()
