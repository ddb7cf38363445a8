"""`/v1/jobs/{id}`: status, a re-attachable event stream, and cancel."""

import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse

from api.accounts.users import User
from api.dependencies import CurrentUser, Jobs, Settings
from api.errors import HearthError, error_responses
from api.jobs.service import JobService, dump
from hearth.contract import START_ID
from hearth.job_record import JobRecord
from hearth.logs import bind

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(400, 401, 404, 413, 500, 503))
EVENT_ID = r"\d{1,19}-\d{1,19}"  # a stream id, as sent in each event's `id` (two numbers below 2**64)


async def _owned(jobs: JobService, job_id: str, user: User) -> JobRecord:
    job = await jobs.get(job_id)
    if job is None or not (job.owner == user.name or user.is_admin):  # another's job is as good as absent
        raise HearthError(404, f"No job {job_id!r}.", "not_found_error", "job_not_found", "job_id")
    bind(job_id=job.id)
    return job


@router.get("/{job_id}")
async def get_job(job_id: str, jobs: Jobs, user: CurrentUser) -> dict[str, object]:
    return dump(await _owned(jobs, job_id, user))


@router.post("/{job_id}/cancel")
async def cancel_job(job_id: str, jobs: Jobs, user: CurrentUser) -> dict[str, object]:
    job = await _owned(jobs, job_id, user)
    if job.status in ("queued", "running"):
        await jobs.cancel(job)
    return dump(await _owned(jobs, job_id, user))


async def _events(jobs: JobService, job: JobRecord, after: str) -> AsyncIterator[dict[str, str]]:
    async for event_id, event in jobs.events(job, after):
        message = {"event": event.type.value, "data": event.model_dump_json()}
        if event_id is not None:  # queued events are not in the log, so not resumable
            message["id"] = event_id
        yield message


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses={200: {"description": "Server-sent events.", "content": {"text/event-stream": {}}}})
async def job_events(
    job_id: str,
    jobs: Jobs,
    user: CurrentUser,
    settings: Settings,
    last_event_id: str | None = Header(None),
    after: str | None = Query(None, pattern=f"^{EVENT_ID}$", description="Resume after this event id."),
) -> EventSourceResponse:
    """The job's events as SSE with ids; reconnect with `Last-Event-ID` to resume."""
    job = await _owned(jobs, job_id, user)
    resume = after or last_event_id or START_ID
    if not re.fullmatch(EVENT_ID, resume):
        raise HearthError(400, "Last-Event-ID must be an event id such as 1700000000000-0.", param="Last-Event-ID")
    return EventSourceResponse(_events(jobs, job, resume), ping=settings.sse_ping_s, headers={"X-Job-Id": job.id})
