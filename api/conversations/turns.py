"""A conversation's turn, from question to filed answer: the one owner of what chat
completions, responses and the filing of ended jobs do to a conversation around a job.

1. `settle`: an answer that ended (or whose job was never queued) but is not filed yet is filed
   now, so it comes before the new question and in the history the new turn continues.
2. `taking`: the question and the mark of the job that will answer it are one write, refused
   with 409 `conversation_busy` while another answer is marked; if the job is then never queued
   (refused a place, Redis failed), the question and the mark are withdrawn.
3. `file_answer` (housekeeping, when the job ends): the answer, whole or as far as it got,
   becomes the assistant's message, and the conversation is free again.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from api.conversations.schemas import AnyItem, Status
from api.conversations.store import ConversationStore
from api.jobs.service import JobService
from hearth.contract import DoneEvent
from hearth.lifecycle import TERMINAL


class TurnService:
    def __init__(self, jobs: JobService, conversations: ConversationStore, queueing_s: float):
        self._jobs, self._conversations = jobs, conversations
        # A turn's job is queued moments after its conversation is marked: a marked job missing
        # for longer never will be (its api stopped between the two), and must not keep the
        # conversation busy.
        self._queueing_s = queueing_s

    async def settle(self, owner: str, conv_id: str) -> None:
        """Before a new turn: file the previous answer if it ended. One still on its way stays
        marked, and the turn's write refuses it (409)."""
        mark = await self._conversations.answering(owner, conv_id)
        if mark is None:
            return
        pending, marked_s = mark
        job = await self._jobs.get(pending)
        ended = job.status in TERMINAL if job is not None else marked_s > self._queueing_s  # no job: never queued, or expired
        if ended:
            await self.file_answer(owner, conv_id, pending)

    @asynccontextmanager
    async def taking(self, owner: str, conv_id: str | None, items: Sequence[AnyItem], job_id: str) -> AsyncIterator[list[AnyItem]]:
        """Store the turn's `items` in the conversation (none without one), marked as answered
        by `job_id`, for the block that queues that job; withdrawn if the block fails."""
        if conv_id is None:
            yield []
            return
        asked = await self._conversations.add_items(owner, conv_id, items, answering=job_id)
        try:
            yield asked
        except BaseException:
            await self._conversations.withdraw(owner, conv_id, asked, job_id)
            raise

    async def file_answer(self, owner: str, conv_id: str, job_id: str) -> None:
        """The answer, whole, as the assistant's message of its conversation (and its function
        calls as items); an answer cut short (cancelled, failed) is kept as far as it got, marked
        incomplete. A conversation deleted meanwhile stays deleted. Then the conversation has no
        answer in progress any more."""
        answer = await self._jobs.answer(job_id)
        if answer.text or answer.calls:  # else nothing was said (refused before a token, or failed at once)
            status: Status = "completed" if isinstance(answer.final, DoneEvent) else "incomplete"
            await self._conversations.record_answer(owner, conv_id, job_id, answer.text, status, answer.tool_calls())
        await self.release(owner, conv_id, job_id)

    async def release(self, owner: str, conv_id: str, job_id: str) -> None:
        """The conversation no longer waits for `job_id`'s answer (filed, or never to be)."""
        await self._conversations.answered(owner, conv_id, job_id)
