"""One job, start to finish: prompt, generation, and every event on the job's stream."""

import logging
import threading
import time
from functools import partial
from typing import Any

from hearth.contract import (
    ContextTrimmedEvent,
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    JobPayload,
    PromptTokensDetails,
    StartedEvent,
    TokenEvent,
    Usage,
)
from worker.control import CancelListener
from worker.context import ContextOverflow
from worker.engine import Cancelled, Engine, TimedOut
from worker.events import EventWriter

log = logging.getLogger(__name__)


class QueueTimeout(Exception):
    """The job reached a worker after its `not_after` time."""


class JobRunner:
    def __init__(self, name: str, engine: Engine, writer: EventWriter, cancels: CancelListener):
        self.name, self.engine, self._writer, self._cancels = name, engine, writer, cancels
        self.current_job: str | None = None
        self.remaining = 0  # tokens the running job may still generate
        self._shutting_down = threading.Event()
        self._overheads = engine.prompter.overheads()

    def info(self) -> dict[str, object]:
        """What the heartbeat publishes about this worker."""
        return {
            "model": self.engine.model_id,
            "n_ctx": self.engine.n_ctx,
            "n_vocab": self.engine.n_vocab,
            "state": "busy" if self.current_job else "idle",
            "job": self.current_job,
            "remaining": self.remaining if self.current_job else 0,
            "default_max_tokens": self.engine.settings.default_max_tokens,
            "prompt_overhead": self._overheads[0],
            "message_overhead": self._overheads[1],
        }

    @property
    def stopping(self) -> bool:
        return self._shutting_down.is_set()

    def shutdown(self) -> None:
        """Stop the running generation now rather than after its last token."""
        self._shutting_down.set()
        self._cancels.cancel_current()

    def run(self, job_id: str, payload: JobPayload) -> dict[str, Any]:
        emit = partial(self._writer.emit, job_id)
        self.current_job = job_id
        cancelled = self._cancels.watch(job_id)
        limit = self.engine.settings.job_timeout_s
        emit(StartedEvent(worker=self.name))
        try:
            if cancelled.is_set():
                raise Cancelled()
            if payload.not_after is not None and time.time() > payload.not_after:
                raise QueueTimeout()
            fitted = self.engine.prompter.plan(payload.messages, payload.params.max_tokens)
            if fitted.dropped_messages:
                emit(ContextTrimmedEvent(messages=fitted.dropped_messages, tokens=fitted.dropped_tokens))
            self.remaining = fitted.max_tokens

            def on_text(text: str, n: int) -> None:
                self.remaining -= n
                emit(TokenEvent(text=text, tokens=n))

            gen = self.engine.generate(
                fitted.tokens, fitted.max_tokens, payload.params, on_text, cancelled, time.monotonic() + limit
            )
            usage = Usage(
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                total_tokens=gen.prompt_tokens + gen.completion_tokens,
                prompt_tokens_details=PromptTokensDetails(cached_tokens=gen.cached_tokens),
            )
            emit(DoneEvent(finish_reason=gen.finish_reason, usage=usage))  # type: ignore[arg-type]
            return {"text": gen.text, "finish_reason": gen.finish_reason, "usage": usage.model_dump()}
        except Cancelled:
            if self._shutting_down.is_set():
                emit(ErrorEvent(code=ErrorCode.WORKER_LOST, message="The worker shut down; please retry."))
            else:
                emit(ErrorEvent(code=ErrorCode.CANCELLED, message="The request was cancelled."))
            return {"cancelled": True}
        except QueueTimeout:
            emit(ErrorEvent(code=ErrorCode.TIMEOUT, message="The request waited too long in the queue and was dropped."))
            return {"timed_out": True}
        except TimedOut:
            emit(ErrorEvent(code=ErrorCode.TIMEOUT, message=f"The answer took longer than the {limit} s limit and was ended."))
            return {"timed_out": True}
        except ContextOverflow as exc:
            emit(ErrorEvent(code=ErrorCode.CONTEXT_LENGTH_EXCEEDED, message=str(exc)))
            raise
        except Exception:
            emit(ErrorEvent(code=ErrorCode.INTERNAL, message="The model failed to generate an answer."))
            raise
        finally:
            self._writer.flush()
            self.current_job = None
