"""Stored responses as their owner asks for them: found (another user's is as good as absent),
as they stand (the job while it lives, else its filed outcome), the history a new one continues,
and stopping one; the router (api.responses.router) only translates HTTP."""

from typing import Any

from api.accounts.users import User
from api.conversations.turns import Basis, TurnService
from api.documents.service import DocumentService
from api.errors import HearthError
from api.jobs.service import JobService
from api.responses.objects import ended, response_object
from api.responses.schemas import ResponseCreateRequest
from api.responses.store import ResponseStore, StoredResponse, job_id_of
from hearth.contract import Message, ToolCall
from hearth.job_record import JobRecord
from hearth.lifecycle import JobStatus
from hearth.logs import bind


def not_found(resp_id: str, param: str = "response_id", why: str = "") -> HearthError:
    message = f"The response {resp_id!r} {why}." if why else f"No response {resp_id!r}."
    return HearthError(404, message, "not_found_error", "response_not_found", param)


async def owned(store: ResponseStore, user: User, resp_id: str, param: str = "response_id") -> StoredResponse:
    """The caller's own stored response (another user's is as good as absent)."""
    job_id = job_id_of(resp_id)
    record = None if job_id is None else await store.get(user.name, job_id)
    if record is None:
        raise not_found(resp_id, param)
    bind(job_id=record.job_id)
    return record


async def current(jobs: JobService, record: StoredResponse) -> dict[str, Any]:
    """The response as it stands: the job's status and answer while it lives, else its filed outcome."""
    if record.outcome is not None:
        return ended(record, record.outcome.text, record.outcome.final, record.outcome.calls)
    job = await jobs.get(record.job_id)
    answer = await jobs.answer(record.job_id)
    if job is None or (answer.final is None and job.status not in (JobStatus.QUEUED, JobStatus.RUNNING)):
        raise not_found(record.id, why="has expired")
    if answer.final is not None:
        return ended(record, answer.text, answer.final, answer.tool_calls())
    return response_object(record, job.status, answer.text, None, calls=answer.tool_calls())


async def history(body: ResponseCreateRequest, store: ResponseStore, jobs: JobService, turns: TurnService,
                  documents: DocumentService, user: User) -> tuple[list[Message], Basis | None]:
    """The turns the new input continues: a previous response's, or a conversation's (its
    previous answer settled first; with the Basis the turn's write checks it against, as a chat
    turn's is), with the documents their messages attached that are still kept and the caller's."""
    basis = None
    if body.previous_response_id is not None:
        earlier = await _previous(body, store, jobs, user)
    elif body.conversation_id is not None:
        basis = await turns.basis(user.name, body.conversation_id)
        earlier = basis.messages()
    else:
        earlier = []
    return await documents.owned_messages(user.name, earlier), basis


async def _previous(body: ResponseCreateRequest, store: ResponseStore, jobs: JobService, user: User) -> list[Message]:
    assert body.previous_response_id is not None
    previous = await owned(store, user, body.previous_response_id, "previous_response_id")  # its 404 first
    if body.conversation is not None:
        raise HearthError(400, "previous_response_id and conversation cannot be used together.", param="previous_response_id")
    answer = await current(jobs, previous)
    if answer["status"] in ("queued", "in_progress"):
        raise HearthError(400, f"The response {previous.id!r} has not finished yet.", param="previous_response_id")
    text = "".join(part["text"] for item in answer["output"] if item["type"] == "message" for part in item["content"])
    calls = [ToolCall(id=item["call_id"], name=item["name"], arguments=item["arguments"]) for item in answer["output"]
             if item["type"] == "function_call"]
    return previous.turns(text, calls)


async def stop(jobs: JobService, record: StoredResponse) -> JobRecord | None:
    """Cancels the response's job if it is still queued or running; that job, else None."""
    job = await jobs.get(record.job_id)
    if job is None or job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return None
    await jobs.cancel(job)
    return job
