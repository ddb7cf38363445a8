"""A conversation's turn, from question to filed answer: the one owner of what chat
completions, responses and the filing of ended jobs do to a conversation around a job.

1. `basis`: an answer that ended but is not filed yet is filed now (a turn whose job was never
   queued is withdrawn), so it comes before the new question; then the stored messages the new
   turn continues are read: its history. The conversation's items are a turn's one source of
   history, for chat completions and responses alike; a turn may replace a stored question and
   everything after it (regenerate, edit), and its history then stops before that question.
2. `taking`: the question, the replacement and the mark of the job that will answer it are one
   write, refused with 409 `conversation_busy` while another answer is marked, and with 409
   `conversation_changed` when the conversation no longer ends where its history was read; if
   the job is then never queued (refused a place, Redis failed), the turn is withdrawn: its
   question goes, what it replaced comes back, and the mark goes.
3. `file_answer` (housekeeping, when the job ends): the answer, whole or as far as it got,
   becomes the assistant's message, and the conversation is free again. The turn stands: the
   documents its question sent inline live as long as the question (the conversation holds
   them), and those of the items it replaced are deleted with them.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from api.conversations.schemas import AnyItem, MessageItem, Status, attached, chat_history
from api.conversations.store import ConversationStore, item_not_found
from api.documents.service import DocumentService
from api.errors import HearthError
from api.jobs.service import JobService
from hearth.contract import DoneEvent, Message
from hearth.lifecycle import TERMINAL


@dataclass(frozen=True)
class Basis:
    """What a new turn continues: the stored messages before its question and, for a turn that
    replaces a stored question (and everything after it), that question's id."""

    history: list[AnyItem]
    replace_from: str | None = None

    def messages(self) -> list[Message]:
        return chat_history(self.history)

    @property
    def follows(self) -> str:
        """The item the new question comes right after ('' for none)."""
        return self.history[-1].id if self.history else ""


class TurnService:
    def __init__(self, jobs: JobService, conversations: ConversationStore, documents: DocumentService, queueing_s: float):
        self._jobs, self._conversations, self._documents = jobs, conversations, documents
        # A turn's job is queued moments after its conversation is marked: a marked job missing
        # for longer never will be (its api stopped between the two), and must not keep the
        # conversation busy.
        self._queueing_s = queueing_s

    async def settle(self, owner: str, conv_id: str) -> None:
        """Before a new turn: file the previous answer if it ended. One still on its way stays
        marked, and the turn's write refuses it (409). A mark whose job is missing past the
        queueing time is a turn that never happened (its api stopped before queueing it; or its
        job expired, and with it any answer): withdrawn."""
        mark = await self._conversations.answering(owner, conv_id)
        if mark is None:
            return
        pending, marked_s = mark
        job = await self._jobs.get(pending)
        if job is not None and job.status in TERMINAL:
            await self.file_answer(owner, conv_id, pending)
        elif job is None and marked_s > self._queueing_s:
            await self._withdraw(owner, conv_id, pending)

    async def basis(self, owner: str, conv_id: str, replace_from: str | None = None) -> Basis:
        """The previous answer settled, what a new turn continues: every stored message, or those
        before the user message `replace_from` (404 when it is not in the conversation)."""
        await self.settle(owner, conv_id)
        stored, _ = await self._conversations.items(owner, conv_id, None, -1, "asc")
        if replace_from is None:
            return Basis(stored)
        at = next((n for n, item in enumerate(stored) if item.id == replace_from), None)
        if at is None:
            raise item_not_found(conv_id, replace_from, "replace_from")
        found = stored[at]
        if not isinstance(found, MessageItem) or found.role != "user":
            what = f"the {found.role}'s" if isinstance(found, MessageItem) else f"a {found.type}"
            raise HearthError(400, f"replace_from: {replace_from!r} is not a user message but {what}; name the "
                                   "question to replace (to answer one again, replace it with itself).", param="replace_from")
        return Basis(stored[:at], replace_from)

    @asynccontextmanager
    async def taking(self, owner: str, conv_id: str | None, items: Sequence[AnyItem], job_id: str,
                     basis: Basis | None = None) -> AsyncIterator[list[AnyItem]]:
        """Store the turn's `items` in the conversation (none without one), marked as answered
        by `job_id`, for the block that queues that job; withdrawn if the block fails. With the
        `basis` the turn's prompt was made from, the write replaces what it says, and is refused
        (409) unless the conversation still ends where that history was read."""
        if conv_id is None:
            yield []
            return
        asked = await self._conversations.add_items(
            owner, conv_id, items, answering=job_id, replace_from=basis.replace_from or "" if basis else "",
            follows=basis.follows if basis else None)
        try:
            yield asked
        except BaseException:
            await self._withdraw(owner, conv_id, job_id)
            raise

    async def _withdraw(self, owner: str, conv_id: str, job_id: str) -> None:
        """The turn never happened; a document its question held (a release that failed half
        way, its job then expired) goes with it."""
        await self._documents.delete_held(owner, conv_id, attached(await self._conversations.withdraw(owner, conv_id, job_id)))

    async def file_answer(self, owner: str, conv_id: str, job_id: str) -> None:
        """The answer, whole, as the assistant's message of its conversation (and its function
        calls as items); an answer cut short (cancelled, failed) is kept as far as it got, marked
        incomplete. A conversation deleted meanwhile stays deleted. Then the conversation has no
        answer in progress any more."""
        answer = await self._jobs.answer(job_id)
        if answer.text or answer.calls:  # else nothing was said (refused before a token, or failed at once)
            done = answer.final if isinstance(answer.final, DoneEvent) else None
            status: Status = "completed" if done else "incomplete"
            await self._conversations.record_answer(owner, conv_id, job_id, answer.text, status, answer.tool_calls(),
                                                    done.citations if done else ())
        await self.release(owner, conv_id, job_id)

    async def release(self, owner: str, conv_id: str, job_id: str) -> None:
        """The conversation no longer waits for `job_id`'s answer (filed, or never to be): the
        turn stands. Before its mark goes (a failure leaves it all to do again), the documents
        its question sent inline are held by the conversation and those of what it replaced are
        deleted; a question deleted meanwhile (found gone after the hold) takes its own along."""
        turn = await self._conversations.turn(owner, conv_id, job_id)
        if turn is None:
            return
        asked, dropped = turn
        kept = attached(asked)
        await self._documents.hold(owner, conv_id, kept)
        await self._documents.delete_held(owner, conv_id, [ref for ref in attached(dropped) if ref not in kept])
        await self._conversations.answered(owner, conv_id, job_id)
        gone = await self._conversations.missing(owner, conv_id, [item.id for item in asked])
        await self._documents.delete_held(owner, conv_id, attached([item for item in asked if item.id in gone]))
