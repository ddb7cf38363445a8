"""Files the results of ended jobs that somebody must act on whether or not anyone is watching:
a batch line's answer goes to its batch's output or error file, a chat turn's answer to its
conversation, a stored response's outcome to its record (and its conversation, if it has one).
The lifecycle script (hearth.lifecycle) puts such jobs' ids on ENDED_KEY as they
end; a housekeeping round (one api process at a time) files them. Filing is idempotent (a guard
per line, per conversation turn), so an id is only taken off the list once it is filed: an api
that stops halfway files nothing twice and loses nothing.
"""

import logging

from redis.asyncio import Redis as AsyncRedis

from api.batches.runner import BatchRunner
from api.conversations.schemas import Status
from api.conversations.store import ConversationStore
from api.jobs.service import JobService
from api.responses.store import Outcome, ResponseStore
from hearth.contract import ENDED_KEY, DoneEvent, Sink
from hearth.job_record import JobRecord
from hearth.lifecycle import TERMINAL
from hearth.redis_client import text

log = logging.getLogger(__name__)

PER_ROUND = 200  # ended jobs filed per round
# A turn's job is queued moments after its conversation is marked: a marked job missing for
# longer never will be (its api stopped between the two), and must not keep the conversation busy.
QUEUEING_S = 60


async def file_answer(jobs: JobService, conversations: ConversationStore, owner: str, conv_id: str, job_id: str) -> None:
    """The answer, whole, as the assistant's message of its conversation; an answer cut short
    (cancelled, failed) is kept as far as it got, marked incomplete. A conversation deleted
    meanwhile stays deleted. Then the conversation has no answer in progress any more."""
    answer = await jobs.answer(job_id)
    if answer.text:  # else nothing was said (refused before a token, or failed at once)
        status: Status = "completed" if isinstance(answer.final, DoneEvent) else "incomplete"
        await conversations.record_answer(owner, conv_id, job_id, answer.text, status)
    await conversations.answered(owner, conv_id, job_id)


async def settle(jobs: JobService, conversations: ConversationStore, owner: str, conv_id: str) -> None:
    """Before a new turn in a conversation (a chat turn, a response): an answer that ended, or
    whose job was never queued, but is not filed yet (housekeeping files it within a round) is
    filed now, so that it comes before the new question and in the history it continues. An
    answer still on its way is left marked: the turn's write refuses it (409)."""
    mark = await conversations.answering(owner, conv_id)
    if mark is None:
        return
    pending, marked_s = mark
    job = await jobs.get(pending)
    ended = job.status in TERMINAL if job is not None else marked_s > QUEUEING_S  # no job: never queued, or expired
    if ended:
        await file_answer(jobs, conversations, owner, conv_id, pending)


class Filing:
    def __init__(self, redis: AsyncRedis, jobs: JobService, batches: BatchRunner, conversations: ConversationStore, responses: ResponseStore):
        self._redis, self._jobs, self._batches, self._conversations = redis, jobs, batches, conversations
        self._responses = responses

    async def tick(self) -> None:
        for raw in await self._redis.lrange(ENDED_KEY, 0, PER_ROUND - 1):
            job_id = text(raw)
            job = await self._jobs.get(job_id)
            if job is None:
                pass  # expired before it was filed: nothing left to file
            elif job.sink == Sink.BATCH:
                await self._batches.file(job)
            elif job.sink == Sink.CONVERSATION and job.conversation is not None:
                await file_answer(self._jobs, self._conversations, job.owner, job.conversation, job_id)
            elif job.sink == Sink.RESPONSE:
                await self._response(job)
            await self._redis.lrem(ENDED_KEY, 0, job_id)

    async def _response(self, job: JobRecord) -> None:
        """The outcome into the response's record, so it outlives the job's log; a response
        deleted meanwhile stays deleted. A response in a conversation adds its answer there."""
        record = await self._responses.get(job.owner, job.id)
        answer = await self._jobs.answer(job.id)
        if record is None or answer.final is None:
            return
        await self._responses.file(job.owner, job.id, Outcome(text=answer.text, final=answer.final))
        if record.conversation is not None:
            await file_answer(self._jobs, self._conversations, job.owner, record.conversation, job.id)
