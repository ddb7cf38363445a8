"""Answers the api's "does this conversation fit?" (and "how many tokens are these texts?", for
an embeddings request) before the job is queued."""

import logging
import threading
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError

from hearth.contract import CountReply, CountRequest, FitReply, FitRequest, count_key, fit_key
from hearth.lifecycle import redis_seconds
from hearth.redis_client import text
from worker.context import ContextOverflow
from worker.documents_prompt import DocumentMissing, DocumentReader
from worker.prompter import Prompter

log = logging.getLogger(__name__)


class FitChecker:
    """Runs in its own thread with a vocab-only model of each model it serves, so it answers in
    milliseconds even while the main thread is generating, and for models not in memory."""

    def __init__(self, redis: Redis, prompters: dict[str, Prompter], counters: dict[str, Callable[[str], int]], poll_s: float = 2.0):
        self._redis, self._poll = redis, poll_s
        self._documents = DocumentReader(redis)
        self._prompters = {fit_key(model): prompter for model, prompter in prompters.items()}
        self._counters = {count_key(model): count for model, count in counters.items()}
        threading.Thread(target=self._run, name="fit-check", daemon=True).start()

    def answer(self, prompter: Prompter, request: FitRequest) -> FitReply:
        """With the attached documents' text as the job will have it: whole, or the parts that fit."""
        try:
            fitted = prompter.plan(request.messages, request.max_tokens, request.tools, self._documents.read(request.messages))
        except ContextOverflow as exc:
            return FitReply(fits=False, prompt_tokens=exc.prompt_tokens, n_ctx=prompter.n_ctx, message=str(exc))
        except DocumentMissing as exc:
            return FitReply(fits=False, prompt_tokens=0, n_ctx=prompter.n_ctx, message=str(exc), code="invalid_request")
        return FitReply(fits=True, prompt_tokens=len(fitted.tokens), n_ctx=prompter.n_ctx)

    def _run(self) -> None:
        while True:
            try:
                popped = self._redis.blpop([*self._prompters, *self._counters], timeout=self._poll)  # below redis-py's 5 s socket timeout
                if popped is None:
                    continue
                key = text(popped[0])
                counting = key in self._counters
                request = (CountRequest if counting else FitRequest).model_validate_json(popped[1])
                if request.expires_at < redis_seconds(self._redis.time()):
                    continue
                if isinstance(request, CountRequest):
                    reply: FitReply | CountReply = CountReply(tokens=list(map(self._counters[key], request.texts)))
                else:
                    reply = self.answer(self._prompters[key], request)
                pipe = self._redis.pipeline()
                pipe.rpush(request.reply_to, reply.model_dump_json())
                pipe.expire(request.reply_to, 30)
                pipe.execute()
            except RedisError as exc:
                log.warning("fit check lost Redis, retrying: %s", exc)
                time.sleep(1)
            except Exception:
                log.exception("fit check failed")
