"""Answers the api's "does this conversation fit?" before the job is queued."""

import logging
import threading
import time

from redis import Redis
from redis.exceptions import RedisError

from hearth.contract import FitReply, FitRequest, fit_key
from hearth.lifecycle import redis_seconds
from hearth.redis_client import text
from worker.context import ContextOverflow
from worker.prompter import Prompter

log = logging.getLogger(__name__)


class FitChecker:
    """Runs in its own thread with a vocab-only model of each model it serves, so it answers in
    milliseconds even while the main thread is generating, and for models not in memory."""

    def __init__(self, redis: Redis, prompters: dict[str, Prompter], poll_s: float = 2.0):
        self._redis, self._poll = redis, poll_s
        self._prompters = {fit_key(model): prompter for model, prompter in prompters.items()}
        threading.Thread(target=self._run, name="fit-check", daemon=True).start()

    @staticmethod
    def answer(prompter: Prompter, request: FitRequest) -> FitReply:
        try:
            fitted = prompter.plan(request.messages, request.max_tokens, request.tools)
        except ContextOverflow as exc:
            return FitReply(fits=False, prompt_tokens=exc.prompt_tokens, n_ctx=exc.n_ctx, message=str(exc))
        return FitReply(fits=True, prompt_tokens=len(fitted.tokens), n_ctx=prompter.n_ctx)

    def _run(self) -> None:
        while True:
            try:
                popped = self._redis.blpop(list(self._prompters), timeout=self._poll)  # below redis-py's 5 s socket timeout
                if popped is None:
                    continue
                request = FitRequest.model_validate_json(popped[1])
                if request.expires_at < redis_seconds(self._redis.time()):
                    continue
                pipe = self._redis.pipeline()
                pipe.rpush(request.reply_to, self.answer(self._prompters[text(popped[0])], request).model_dump_json())
                pipe.expire(request.reply_to, 30)
                pipe.execute()
            except RedisError as exc:
                log.warning("fit check lost Redis, retrying: %s", exc)
                time.sleep(1)
            except Exception:
                log.exception("fit check failed")
