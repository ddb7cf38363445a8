"""One job, start to finish: prompt, generation, and every event on the job's stream."""

import logging
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from redis.client import Pipeline

from hearth.contract import (
    ContextTrimmedEvent,
    DoneEvent,
    EmbeddingPayload,
    ErrorCode,
    ErrorEvent,
    JobPayload,
    LoadingEvent,
    Message,
    PromptTokensDetails,
    QueueKind,
    RequeuedEvent,
    Resume,
    TokenEvent,
    Usage,
    queue_name,
    vectors_key,
)
from hearth.lifecycle import JobStatus
from hearth.logs import log_context
from hearth.metrics import record_state_reuse
from hearth.state_routes import StateHolder, state_route_key
from worker.chunk_vectors import ChunkSimilarity, keep_vectors
from worker.context import ContextOverflow
from worker.control import CancelListener
from worker.document_index import DocumentIndex
from worker.documents_prompt import DocumentMissing, DocumentReader, latest_question
from worker.embedder import Refused
from worker.engine import Cancelled, Paused, TimedOut
from worker.events import EventWriter
from worker.grammars import GrammarError
from worker.pool import ModelPool
from worker.state_cache import Source
from worker.state_disk import StateDisk
from worker.tool_calls import CallParser

log = logging.getLogger(__name__)

QUEUE_TIMEOUT_MESSAGE = "The request waited too long in the queue and was dropped."

# Saves the RQ job of a paused job's next attempt in a queue, not yet queued: (queue key, RQ job id).
SaveAttempt = Callable[[str, JobPayload | EmbeddingPayload], tuple[str, str]]


class JobRunner:
    def __init__(self, name: str, holder: str, pool: ModelPool, writer: EventWriter, cancels: CancelListener, save_attempt: SaveAttempt,
                 disk: StateDisk | None, documents: DocumentReader, index: DocumentIndex, similarity: ChunkSimilarity):
        self.name, self.holder, self.pool, self._writer, self._cancels, self._disk = name, holder, pool, writer, cancels, disk
        self._documents, self._index, self._similarity = documents, index, similarity
        self._save_attempt = save_attempt
        self.current_job: str | None = None
        self._preemptible = False  # the running job gives way (a batch line)
        self.remaining = 0  # tokens the running job may still generate
        self._shutting_down = threading.Event()

    def info(self) -> dict[str, object]:
        """What the heartbeat publishes about this worker: the models it serves and holds,
        and the details of the current one (the api checks requests for it with them)."""
        engine = self.pool.current
        settings = engine.settings
        return {
            "model": engine.model_id,
            "models": {m.id: m.n_ctx for m in self.pool.files.values()},  # every model it serves, by name: its window
            "loaded": self.pool.loaded,
            "host": socket.gethostname(),
            "holder": self.holder,
            "threads": settings.n_threads,
            "gpu_layers": settings.n_gpu_layers,
            "n_ctx": engine.n_ctx,
            "n_vocab": engine.n_vocab,
            "state": "busy" if self.current_job else "idle",
            "job": self.current_job,
            "remaining": self.remaining if self.current_job else 0,
            "default_max_tokens": settings.default_max_tokens,
            "prompt_overhead": engine.overheads[0],
            "message_overhead": engine.overheads[1],
            "grammars_built": engine.grammars.built,
            "state_memory_bytes": self.pool.state_memory_bytes,
            "state_disk_bytes": self._disk.size if self._disk else 0,
            # every model it embeds with -> EmbeddingModel (api.embeddings checks requests by it)
            "embeds": {model: spec.published().model_dump() for model, (_, spec) in self.pool.embeddings.items()},
        }

    def model_of(self, payload: JobPayload) -> str:
        """The model that answers: the one named, or for a job queued for any model (before
        any worker was up) the one in memory."""
        return payload.model if payload.model in self.pool.files else self.pool.current.model_id

    @property
    def stopping(self) -> bool:
        return self._shutting_down.is_set()

    def shutdown(self) -> None:
        """Stop the running generation now rather than after its last token: a chat ends
        (its client can retry at once), a batch line goes back to its queue with its answer so
        far, for this worker's successor or another."""
        self._shutting_down.set()
        if self._preemptible:
            self._cancels.preempt.set()
        else:
            self._cancels.cancel_current()

    def run(self, payload: JobPayload) -> dict[str, Any]:
        model = self.model_of(payload)
        with log_context(model=model):  # the job's lines name the model that answers it
            return self._run(payload, model)

    def _start(self, job_id: str, preemptible: bool) -> tuple[Callable[..., None], threading.Event] | None:
        """Take the job: its event emitter and cancel flag, or None if it is not to run
        (cancelled, past its deadline (ended now) or ended already)."""
        emit = partial(self._writer.emit, job_id)
        cancelled = self._cancels.watch(job_id)
        if self._writer.start(job_id, self.name, QUEUE_TIMEOUT_MESSAGE) != JobStatus.RUNNING:
            return None
        self.current_job, self._preemptible = job_id, preemptible
        return emit, cancelled

    def _run(self, payload: JobPayload, model: str) -> dict[str, Any]:
        job_id = payload.job_id
        started = self._start(job_id, payload.preemptible)
        if started is None:
            return {"started": False}
        emit, cancelled = started
        resumed = payload.resume.tokens if payload.resume else []
        limit = self.pool.current.settings.job_timeout_s
        try:
            documents = self._documents.read(payload.messages)
            # Before the chat model is taken: embedding the question may load the embedding model.
            similar = self._similarity.of(documents, payload.messages[latest_question(payload.messages)].content,
                                          self.pool.files[model].n_ctx, lambda loaded: emit(LoadingEvent(model=loaded))) if documents else {}
            engine = self.pool.get(model, loading=lambda: emit(LoadingEvent(model=model)))
            fitted = engine.prompter.plan(payload.messages, payload.params.max_tokens, payload.tools, documents, similar)
            if fitted.dropped_messages and not resumed:
                emit(ContextTrimmedEvent(messages=fitted.dropped_messages, tokens=fitted.dropped_tokens))
            self.remaining = fitted.max_tokens - len(resumed)

            calls = CallParser(job_id, engine.prompter.template.dialect) if payload.tools else None
            if calls and resumed:  # what the paused attempt sent: its events are out already
                calls.feed(engine.answer_text(resumed, payload.tools).decode(errors="replace"), 0)

            def on_text(text: str, n: int) -> None:
                self.remaining -= n
                for event in calls.feed(text, n) if calls else [TokenEvent(text=text, tokens=n)]:
                    emit(event)

            gen = engine.generate(
                fitted.tokens + resumed, fitted.max_tokens - len(resumed), payload.params, on_text, cancelled,
                time.monotonic() + limit, self._cancels.preempt if payload.preemptible else None, resumed, payload.tools,
            )
            for event in calls.finish() if calls else []:
                emit(event)
            finish = "tool_calls" if calls and calls.count and gen.finish_reason == "stop" else gen.finish_reason
            if resumed:
                log.info("job resumed", extra={"resumed_tokens": len(resumed), "evaluated_tokens": gen.prompt_tokens - gen.cached_tokens})
            usage = Usage(
                prompt_tokens=len(fitted.tokens),
                completion_tokens=len(resumed) + gen.completion_tokens,
                total_tokens=len(fitted.tokens) + len(resumed) + gen.completion_tokens,
                prompt_tokens_details=PromptTokensDetails(cached_tokens=min(gen.cached_tokens, len(fitted.tokens))),
            )
            kept = not payload.preemptible and not (calls and calls.count) and engine.cache.keeps(usage.total_tokens)
            route = state_route_key(model, [*payload.messages, Message(role="assistant", content=gen.text)]) if kept else None
            emit(DoneEvent(finish_reason=finish, usage=usage, citations=list(fitted.citations)),
                 partial(self._after, route, usage.total_tokens, gen.reuse))
            if not payload.preemptible:  # a batch line's state is seldom asked for again: it would evict the chats'
                engine.keep_state(route)  # after the answer's end went out: its reader never waits for the copy
            return {"finish_reason": finish, "usage": usage.model_dump()}
        except Paused as paused:
            if self._shutting_down.is_set():  # for this worker's successor (a chat's pause leaves it in the memory cache)
                engine.keep_state()
            try:
                return self._pause(payload, resumed + paused.tokens, queue_name(QueueKind.BATCH, model))
            except Exception:
                emit(ErrorEvent(code=ErrorCode.INTERNAL, message="The request could not be paused and was ended."))
                raise
        except Cancelled:
            if not payload.preemptible:
                engine.keep_state()  # the next turn (or a retry on this worker's successor) starts from it
            return self._cancelled(emit)
        except TimedOut:
            emit(ErrorEvent(code=ErrorCode.TIMEOUT, message=f"The answer took longer than the {limit} s limit and was ended."))
            return {"timed_out": True}
        except ContextOverflow as exc:
            emit(ErrorEvent(code=ErrorCode.CONTEXT_LENGTH_EXCEEDED, message=str(exc)))
            raise
        except DocumentMissing as exc:
            emit(ErrorEvent(code=ErrorCode.INVALID_REQUEST, message=str(exc), param="messages"))
            return {"refused": "messages"}
        except GrammarError as exc:
            emit(ErrorEvent(code=ErrorCode.INTERNAL, message=str(exc)))
            raise
        except Exception:
            emit(ErrorEvent(code=ErrorCode.INTERNAL, message="The model failed to generate an answer."))
            raise
        finally:
            self._writer.flush()
            self.current_job, self._preemptible = None, False

    def _after(self, route: str | None, tokens: int, reuse: Source, pipe: Pipeline) -> None:
        """With a chat's final event: its reuse of a saved state counted and, when its state is
        kept, this worker named as its holder at `route`, so the conversation's next turn is
        routed here (hearth.state_routes). Not for an answer with calls: its next turn's history
        spells them as the client sends them back."""
        record_state_reuse(pipe, reuse)
        if route is not None:
            pipe.set(route, StateHolder(holder=self.holder, tokens=tokens).model_dump_json(), ex=self.pool.current.settings.state_route_ttl_s)

    def _cancelled(self, emit: Callable[[ErrorEvent], None]) -> dict[str, Any]:
        if self._shutting_down.is_set():
            emit(ErrorEvent(code=ErrorCode.WORKER_LOST, message="The worker shut down; please retry."))
        else:
            emit(ErrorEvent(code=ErrorCode.CANCELLED, message="The request was cancelled."))
        return {"cancelled": True}

    def _pause(self, payload: JobPayload, tokens: list[int], queue: str) -> dict[str, Any]:
        """Give way to a waiting chat (or this worker's shutdown): the job goes back to the
        front of its queue as a new attempt that resumes from `tokens`, on any worker of the
        model. The model state of prompt + `tokens` stays in this worker's state cache, so
        resuming here evaluates almost nothing again."""
        nxt = payload.model_copy(update={"resume": Resume(tokens=tokens)})
        self._requeue(nxt, queue, RequeuedEvent(reason="paused", kept_tokens=len(tokens)))
        return {"paused": True, "completion_tokens": len(tokens)}

    def _requeue(self, nxt: JobPayload | EmbeddingPayload, queue: str, event: RequeuedEvent) -> None:
        push = self._save_attempt(queue, nxt)
        if not self._writer.apply_now(nxt.job_id, [event], push=push):
            log.info("job ended while pausing")  # cancelled meanwhile: the saved attempt never runs
        else:
            log.info("job paused for a chat", extra={"completion_tokens": event.kept_tokens, "inputs": event.kept_inputs})

    def embed(self, payload: EmbeddingPayload) -> dict[str, Any]:
        """An embedding job: its inputs in passes of the model, their vectors written to the
        job's vectors key. Between two passes it gives way to a waiting chat (or this worker's
        shutdown) as a batch line does: back to the front of its queue with the vectors so far
        kept, so a chat waits for one pass at most."""
        model = payload.model if payload.model in self.pool.embeddings else next(iter(self.pool.embeddings))
        with log_context(model=model):
            return self._embed(payload, model)

    def _embed(self, payload: EmbeddingPayload, model: str) -> dict[str, Any]:
        job_id = payload.job_id
        started = self._start(job_id, preemptible=True)
        if started is None:
            return {"started": False}
        emit, cancelled = started
        self.remaining = 0  # it generates no tokens
        limit, ttl = self.pool.current.settings.job_timeout_s, self.pool.current.settings.job_ttl_s
        deadline = time.monotonic() + limit
        done, vectors = payload.done, bytearray()

        def keep(pipe: Pipeline) -> None:
            # At this attempt's place, not appended: an attempt run again (its worker died
            # after writing) rewrites the same bytes.
            offset = payload.done * embedder.spec.dimensions * 4
            if payload.document_id is not None:
                keep_vectors(pipe, payload.document_id, self._similarity.made_with(model, embedder.spec.dimensions), offset, bytes(vectors))
                return
            key = vectors_key(job_id)
            pipe.setrange(key, offset, bytes(vectors))
            pipe.expire(key, ttl)

        try:
            embedder = self.pool.embedder(model, loading=lambda: emit(LoadingEvent(model=model)))
            if payload.document_id is None:
                inputs = embedder.tokens(payload.inputs, payload.dimensions)
            else:  # a document's chunks, as chats cut them; none when it was deleted before its turn
                document = self._documents.one(payload.document_id)
                parts = self._index.get(document).chunks if document is not None else []
                inputs = embedder.tokens(self._similarity.chunk_inputs([c.text for c in parts]), None, truncate=True)
            for run in embedder.passes(inputs[done:]):
                if cancelled.is_set():
                    raise Cancelled()
                if time.monotonic() > deadline:
                    raise TimedOut()
                if self._cancels.preempt.is_set():
                    self._writer.write(keep)
                    nxt = payload.model_copy(update={"done": done, "model": model})
                    kind = QueueKind.BATCH if payload.batch else QueueKind.EMBEDDING
                    self._requeue(nxt, queue_name(kind, model), RequeuedEvent(reason="paused", kept_inputs=done))
                    return {"paused": True, "inputs": done}
                vectors += embedder.embed(run).astype("<f4").tobytes()
                done += len(run)
            self._writer.write(keep)
            tokens = sum(map(len, inputs))
            emit(DoneEvent(finish_reason="stop", usage=Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)))
            return {"inputs": len(inputs), "usage": {"prompt_tokens": tokens}}
        except Refused as exc:
            code = ErrorCode.CONTEXT_LENGTH_EXCEEDED if exc.too_long else ErrorCode.INVALID_REQUEST
            emit(ErrorEvent(code=code, message=str(exc), param=exc.param))
            return {"refused": exc.param}
        except Cancelled:
            return self._cancelled(emit)
        except TimedOut:
            if payload.document_id is not None:  # its first chunks rank by their vectors, the others by BM25 alone
                self._writer.write(keep)
            emit(ErrorEvent(code=ErrorCode.TIMEOUT, message=f"The embeddings took longer than the {limit} s limit and were ended."))
            return {"timed_out": True}
        except Exception:
            emit(ErrorEvent(code=ErrorCode.INTERNAL, message="The model failed to embed the input."))
            raise
        finally:
            self._writer.flush()
            self.current_job, self._preemptible = None, False
