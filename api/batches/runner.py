"""Runs batches: reads their input files, feeds their lines to each model's batch queue a few
at a time, files each line's result once, and ends them (completed, cancelled, expired).

One api process at a time does this (the housekeeping lease, api.jobs.housekeeping). Everything it
works from is in Redis, so another api process takes over where it stopped. Lines are fed in
bounded slices (`BATCH_SLICE` per model queue), round-robin across users, so memory and Redis
keys grow with the slice, not with the file, and several people's batches share the machine.
Batch lines are preemptible: a chat for their model pauses the running line (worker.runner),
so a batch never delays a chat by more than a token.
"""

import itertools
import json
import logging
import secrets
import time
from functools import partial
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from starlette.concurrency import run_in_threadpool

from api.batches.store import (
    EMBEDDINGS_ENDPOINT,
    ERRORS_SHOWN,
    BatchInfo,
    BatchStatus,
    BatchStore,
    LineError,
    PendingLine,
    chat_lines,
    queue_line,
    read_lines,
)
from api.chat.limits import check_for_worker, check_request
from api.chat.rendering import error_of
from api.chat.schemas import ChatCompletionRequest
from api.embeddings.schemas import render
from api.embeddings.service import embedding_lines
from api.errors import HearthError
from api.files.store import FileStore
from api.jobs.queueing import queue_key
from api.jobs.service import JobService
from api.models.routing import model_map
from api.responses.objects import ended
from api.responses.store import StoredResponse
from api.settings import ApiSettings
from api.usage.quota import QuotaExceeded, QuotaGate
from hearth.contract import (
    DoneEvent,
    EmbeddingPayload,
    ErrorCode,
    ErrorEvent,
    JobPayload,
    QueueKind,
    Sink,
    events_key,
    queue_name,
    vectors_key,
)
from hearth.job_record import JobRecord, enqueue, rq_queue
from hearth.lifecycle import JobStatus, redis_seconds

log = logging.getLogger(__name__)

EXPIRED = ("batch_expired", "The batch's completion window ended before this line ran.")
CANCELLED = ("batch_cancelled", "The batch was cancelled before this line finished.")


class BatchRunner:
    def __init__(self, redis: AsyncRedis, rq_redis: Redis, store: BatchStore, files: FileStore, jobs: JobService, quota: QuotaGate,
                 settings: ApiSettings):
        self._redis, self._rq_redis, self._store, self._files, self._jobs = redis, rq_redis, store, files, jobs
        self._quota = quota
        self._settings = settings
        self._turns = itertools.count()  # feeds so far
        self._served: dict[str, int] = {}  # owner -> the feed that last served them

    async def tick(self) -> None:
        now = redis_seconds(await self._redis.time())
        feedable: list[BatchInfo] = []
        for batch_id in await self._store.active():
            batch = await self._store.get(batch_id)
            if batch is None:
                continue
            if batch.status == BatchStatus.VALIDATING:
                batch = await self._validate(batch)
            if batch.status == BatchStatus.IN_PROGRESS and now > float(batch.fields["expires_at"]):
                await self._store.set(batch.id, expiring="1")
                batch = await self._end_lines(batch, *EXPIRED)
            if batch.status == BatchStatus.CANCELLING:
                batch = await self._end_lines(batch, *CANCELLED)
            if batch.status in (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING) and await self._store.counts(batch.id) == (0, 0):
                await self._finish(batch, now)
            elif batch.status == BatchStatus.IN_PROGRESS:
                feedable.append(batch)
        await self._feed(feedable)

    async def _validate(self, batch: BatchInfo) -> BatchInfo:
        data = await self._files.content(batch.owner, batch.fields["input_file_id"])
        endpoint = batch.fields["endpoint"]
        embeddings = endpoint == EMBEDDINGS_ENDPOINT
        models = await model_map(self._redis, self._settings, embeddings=embeddings)

        def model_of(name: str) -> str:
            return models.route(name).queue_model

        def check(body: ChatCompletionRequest) -> None:
            check_request(body, self._settings)
            route = models.route(body.model)
            if route.worker:
                check_for_worker(body, route.worker)

        make = (embedding_lines(batch.owner, models, self._settings.embedding_max_inputs) if embeddings
                else chat_lines(batch.owner, endpoint, model_of, check))
        good, bad = await run_in_threadpool(read_lines, data or b"", endpoint, make)
        await self._store.add_lines(batch.id, good, bad)
        if not good:
            reason = "The input file has no lines that can run." if data else "The input file is gone."
            await self._store.set(batch.id, errors=_errors(bad, reason))
            await self._store.move(batch.id, BatchStatus.FAILED, BatchStatus.VALIDATING)
            await self._store.close(batch.id)
            log.info("batch failed validation", extra={"batch_id": batch.id, "errors": len(bad)})
            return await self._reload(batch)
        for error in bad:
            await self._store.file(batch.id, error.line, "errors", _error_line(error.custom_id, error.code, error.message))
        await self._store.move(batch.id, BatchStatus.IN_PROGRESS, BatchStatus.VALIDATING)
        log.info("batch started", extra={"batch_id": batch.id, "lines": len(good), "invalid_lines": len(bad)})
        return await self._reload(batch)

    async def _reload(self, batch: BatchInfo) -> BatchInfo:
        return await self._store.get(batch.id) or batch

    async def _end_lines(self, batch: BatchInfo, code: str, message: str) -> BatchInfo:
        """Cancel or expire: lines not yet queued end now; queued or running ones are
        cancelled (an expiring batch lets a running line finish) and filed as they end."""
        for line in await self._store.take_pending(batch.id):
            await self._store.file(batch.id, line.index, "errors", _error_line(line.custom_id, code, message))
        expiring = code == EXPIRED[0]
        for job_id in await self._store.inflight(batch.id):
            job = await self._jobs.get(job_id)
            if job is None:
                await self._store.forget_inflight(batch.id, job_id)
            elif job.status == JobStatus.QUEUED or not expiring:
                await self._jobs.cancel(job)
        if expiring:
            await self._store.move(batch.id, BatchStatus.FINALIZING, BatchStatus.IN_PROGRESS)
        return await self._reload(batch)

    async def _finish(self, batch: BatchInfo, now: float) -> None:
        """Every line is filed: write the output and error files and end the batch."""
        if batch.status == BatchStatus.IN_PROGRESS:
            await self._store.move(batch.id, BatchStatus.FINALIZING, BatchStatus.IN_PROGRESS)
        batch = await self._reload(batch)
        output, errors = await self._store.results(batch.id)
        fields: dict[str, str | int] = {}
        for name, lines in (("output", output), ("error", errors)):
            if lines:
                data = b"".join(line + b"\n" for line in lines)
                info = await self._files.create(batch.owner, f"{batch.id}_{name}.jsonl", "batch_output", data)
                fields[f"{name}_file_id"] = info.id
        if fields:
            await self._store.set(batch.id, **fields)
        final = {BatchStatus.CANCELLING: BatchStatus.CANCELLED}.get(batch.status) or (BatchStatus.EXPIRED if batch.fields.get("expiring") else BatchStatus.COMPLETED)
        await self._store.move(batch.id, final, BatchStatus.FINALIZING, BatchStatus.CANCELLING)
        await self._store.close(batch.id)
        log.info("batch %s", final, extra={"batch_id": batch.id})

    async def file(self, job: JobRecord) -> None:
        """File an ended line's result in its batch, once (api.jobs.filing calls this), and drop
        the line's job: its result is all that is kept."""
        assert job.batch is not None and job.line is not None
        batch = await self._store.get(job.batch)
        kind, line, tokens = await self._result(job, batch)
        await self._store.file(job.batch, job.line, kind, line, tokens, job.id)
        await self._redis.delete(job.key, events_key(job.id), vectors_key(job.id))
        await self._quota.release(job.owner, job.id)  # its job is gone: no status says it ended

    async def _result(self, job: JobRecord, batch: BatchInfo | None) -> tuple[str, dict[str, Any], tuple[int, int]]:
        """A line's output or error file line, from its job's events."""
        job_id = job.id
        answer = await self._jobs.answer(job_id)
        custom_id = job.custom_id or ""
        final = answer.final
        if isinstance(final, ErrorEvent) and batch is not None:
            # Lines the batch's end stopped (withdrawn, or refused at start past the window).
            expiring = bool(batch.fields.get("expiring"))
            if final.code == ErrorCode.CANCELLED or (final.code == ErrorCode.TIMEOUT and expiring):
                code, message = (EXPIRED if expiring else CANCELLED)
                return "errors", _error_line(custom_id, code, message), (0, 0)
        try:
            if job.encoding_format is not None:  # a /v1/embeddings line answers with its vectors
                return await self._vectors(job, answer.final)
            body = answer.completion(job_id, job.created, job.model, job.legacy_functions)
        except HearthError as exc:
            return "errors", _response_line(job_id, custom_id, exc.status, exc.body()), (0, 0)
        except ValueError:
            return "errors", _error_line(custom_id, "internal_error", "The line ended without an answer."), (0, 0)
        usage = body["usage"]
        if job.response is not None:  # a /v1/responses line answers with a `response`
            assert answer.final is not None
            body = ended(StoredResponse.model_validate_json(job.response), answer.text, answer.final, answer.tool_calls())
        return "output", _response_line(job_id, custom_id, 200, body), (usage["prompt_tokens"], usage["completion_tokens"])

    async def _vectors(self, job: JobRecord, final: DoneEvent | ErrorEvent | None) -> tuple[str, dict[str, Any], tuple[int, int]]:
        if isinstance(final, ErrorEvent):
            raise error_of(final)
        if final is None:
            raise ValueError("the line has not ended")
        vectors = await self._redis.get(vectors_key(job.id))
        if not isinstance(vectors, bytes) or job.inputs is None or job.encoding_format is None:
            raise ValueError("the line ended without its vectors")
        body = await run_in_threadpool(render, vectors, job.inputs, job.model, final.usage.prompt_tokens, job.encoding_format)
        return "output", _response_line(job.id, job.custom_id or "", 200, body), (final.usage.prompt_tokens, 0)

    async def _feed(self, batches: list[BatchInfo]) -> None:
        """Top up each model's batch queue to `BATCH_SLICE` lines, one line at a time to the
        user served longest ago (a user new to the round first)."""
        by_owner: dict[str, list[BatchInfo]] = {}
        for batch in batches:
            by_owner.setdefault(batch.owner, []).append(batch)
        room: dict[str, int] = {}
        while await self._feed_one(by_owner, room):
            pass

    async def _feed_one(self, by_owner: dict[str, list[BatchInfo]], room: dict[str, int]) -> bool:
        for owner in sorted(by_owner, key=lambda o: self._served.get(o, -1)):
            for batch in by_owner[owner]:
                line = await self._store.next_pending(batch.id)
                if line is None:
                    continue
                queue = queue_name(QueueKind.BATCH, line.payload.model)
                if queue not in room:
                    room[queue] = self._settings.batch_slice - int(await self._redis.llen(queue_key(queue)))
                if room[queue] <= 0:
                    continue
                if not await self._within_quota(batch, line):
                    del by_owner[owner]  # their other batches wait too
                    break
                if await run_in_threadpool(self._enqueue, batch, line, queue):
                    room[queue] -= 1
                    self._served[owner] = next(self._turns)
                    return True
                await self._quota.release(owner, line.payload.job_id)
        return False

    async def _within_quota(self, batch: BatchInfo, line: PendingLine) -> bool:
        """Whether the line fits its owner's quota (api.usage.quota; it then holds its share).
        One that does not waits in the pending list, with the rest of the batch, until the
        limit resets or is raised: a batch pauses at its owner's quota, its lines do not fail."""
        payload = line.payload
        try:
            max_tokens = payload.params.max_tokens if isinstance(payload, JobPayload) else None
            await self._quota.admit(batch.owner, payload.job_id, payload.model, max_tokens, batch_line=True)
        except QuotaExceeded as exc:
            until = "" if exc.resets_at is None else exc.resets_at.isoformat()
            if batch.fields.get("quota_paused_until") != until:
                await self._store.set(batch.id, quota_paused_until=until)
                log.info("batch paused at its owner's quota", extra={"batch_id": batch.id, "limit": exc.limit})
            return False
        if "quota_paused_until" in batch.fields:
            await self._store.unset(batch.id, "quota_paused_until")
        return True

    def _enqueue(self, batch: BatchInfo, line: PendingLine, queue_name_: str) -> bool:
        """Queue the batch's next line as a job (its record and its RQ job)."""
        payload, ttl_s = line.payload, self._settings.job_ttl_s
        queue = rq_queue(queue_name_, self._rq_redis)
        record = JobRecord(
            id=payload.job_id, owner=batch.owner, model=payload.model, created=int(time.time()), queue=queue_name_,
            not_after=float(batch.fields["expires_at"]), sink=Sink.BATCH, batch=batch.id, custom_id=line.custom_id, line=line.index,
            max_tokens=payload.params.max_tokens or 0 if isinstance(payload, JobPayload) else 0,
            response=line.response.model_dump_json() if line.response else None, legacy_functions=line.legacy_functions,
            **({"encoding_format": line.encoding_format, "inputs": len(payload.inputs)}
               if line.encoding_format and isinstance(payload, EmbeddingPayload) else {}),
        )

        return queue_line(self._rq_redis, batch.id, line, partial(enqueue, queue=queue, record=record, payload=payload, ttl_s=ttl_s))


def _error_line(custom_id: str | None, code: str, message: str) -> dict[str, Any]:
    return {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}


def _response_line(job_id: str, custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"batch_req_{job_id}", "custom_id": custom_id,
            "response": {"status_code": status, "request_id": job_id, "body": body}, "error": None}


def _errors(bad: list[LineError], reason: str) -> str:
    shown = [e.model_dump(exclude={"custom_id"}) for e in bad[:ERRORS_SHOWN]]
    return json.dumps(shown or [{"code": "empty_file", "line": None, "message": reason, "param": None}])
