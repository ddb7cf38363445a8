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
from api.conversations.turns import TurnService
from api.jobs.service import JobService
from api.responses.store import Outcome, ResponseStore
from hearth.contract import ENDED_KEY, Sink
from hearth.job_record import JobRecord
from hearth.redis_client import text

log = logging.getLogger(__name__)

PER_ROUND = 200  # ended jobs filed per round


class Filing:
    def __init__(self, redis: AsyncRedis, jobs: JobService, batches: BatchRunner, turns: TurnService, responses: ResponseStore):
        self._redis, self._jobs, self._batches, self._turns = redis, jobs, batches, turns
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
                await self._turns.file_answer(job.owner, job.conversation, job_id)
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
        await self._responses.file(job.owner, job.id, Outcome(text=answer.text, final=answer.final, calls=answer.tool_calls()))
        if record.conversation is not None:
            await self._turns.file_answer(job.owner, record.conversation, job.id)
