"""The api <-> worker contract: queue names, Redis keys, the job payload and the event schema.

With `hearth.lifecycle` (which owns a job's status), this is what the api and the worker share.
Everything crosses Redis as JSON, RQ's job data included (`RQ_SERIALIZER`).

Events of a job are appended to a per-job Redis Stream (the replay log, kept for a TTL) and, in
the same script (hearth.lifecycle), published on the job's pub/sub channel. Live readers hear each append pushed
to them at once; the stream serves whoever was not listening (a reader that attaches late, after
the end, or resumes with an SSE `Last-Event-ID`, which is simply a stream id). Every published
message names the stream id that preceded it, so a reader knows when it missed one and re-reads
the log from its last id: no event is lost, none is delivered twice. Pub/sub also carries cancel
requests to the worker, which must hear them between two tokens.
"""

from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, TypeAdapter

from hearth.documents import Citation, DocumentRef


class QueueKind(StrEnum):
    """Each model has one RQ queue of each kind; its workers read them in this order: chats,
    then embeddings (`/v1/embeddings`, which give way to a chat between two passes of the
    model), then batch lines."""

    INTERACTIVE = "interactive"
    EMBEDDING = "embedding"
    BATCH = "batch"


class Sink(StrEnum):
    """Where a job's result goes when it ends, whoever is watching (the job hash's `sink`)."""

    BATCH = "batch"  # a batch line: its output or error file
    CONVERSATION = "conversation"  # a chat turn: its conversation, as the assistant's message
    RESPONSE = "response"  # a stored response (`/v1/responses`): its record, and its conversation if it has one


def queue_name(kind: QueueKind, model: str) -> str:
    return f"{kind.value}:{model}"


# Requests made before any worker has ever been up (no model is known yet) wait here for the
# first worker of any model, which answers them with its own.
ANY_MODEL = "*"


def model_queues(models: list[str], embedding_models: list[str]) -> list[str]:
    """A worker's queues, in the order it reads them by default: chats first, its models'
    (in the order given) before any's. Embedding jobs wait in the queues of the models it
    embeds with; batch lines (chats or embeddings) in those of either."""
    by_kind = {QueueKind.INTERACTIVE: models, QueueKind.EMBEDDING: embedding_models,
               QueueKind.BATCH: [*models, *(m for m in embedding_models if m not in models)]}
    return [queue_name(kind, m) for kind in QueueKind for m in (*by_kind[kind], ANY_MODEL)]


# A worker's own queue of a model's chats, `interactive:<model>@<worker>`: turns routed to it
# because it holds their conversation's saved state (hearth.state_routes). It reads them before
# the model's shared queue. Worker names cannot hold the mark (worker.settings).
HELD_MARK = "@"


def held_queue(model: str, worker: str) -> str:
    return f"{queue_name(QueueKind.INTERACTIVE, model)}{HELD_MARK}{worker}"


def queue_holder(queue: str) -> str | None:
    """The worker whose own queue `queue` is, or None for a model's shared queue."""
    rest, mark, worker = queue.rpartition(HELD_MARK)
    return worker if mark and rest.startswith(f"{QueueKind.INTERACTIVE.value}:") else None


def queue_model(queue: str) -> str:
    """The model whose jobs wait in `queue` (ANY_MODEL for the `*` queues)."""
    model = queue.partition(":")[2]
    return model.rpartition(HELD_MARK)[0] if queue_holder(queue) else model


RQ_SERIALIZER = "json"  # RQ's JSONSerializer: job arguments and results as JSON, never pickle

# Import paths of the job functions; the api enqueues them by name and never imports the worker.
GENERATE_FUNC = "worker.tasks.generate"
EMBED_FUNC = "worker.tasks.embed"

JOB_KEY = "hearth:job:{job_id}"  # hash: the job's record (hearth.job_record.JobRecord); its status is hearth.lifecycle's
RUNNING_KEY = "hearth:running"  # hash: running job id -> its worker (the reaper's round)
ENDED_KEY = "hearth:ended"  # list: ended jobs with a `sink`, for the api to file (api.jobs.filing)
# list of at most one item, pushed when there is housekeeping to do (a job to file, a batch
# created or cancelled): the api's round starts at once instead of at its next interval
NUDGE_KEY = "hearth:housekeeping:nudge"
PREEMPT_CHANNEL = "hearth:preempt:{model}"  # pub/sub: an interactive job was queued for the model
EVENTS_KEY = "hearth:job:{job_id}:events"  # Stream: the job's replay log
# string: an embedding job's vectors, float32 little-endian, input after input, written as
# they are made (a paused job's are kept); complete once the job's `done` event is in its log
VECTORS_KEY = "hearth:job:{job_id}:vectors"
LIVE_CHANNEL = "hearth:job:{job_id}:live"  # pub/sub: each append to the log, as it happens
CANCEL_KEY = "hearth:job:{job_id}:cancel"  # set when a cancel is requested (seen at job start)
CANCEL_CHANNEL = "hearth:cancel"  # pub/sub: job ids to stop (heard while a job runs)
FIT_KEY = "hearth:fit:{model}"  # list of FitRequest: does this chat fit the model's window?
COUNT_KEY = "hearth:count:{model}"  # list of CountRequest: an embeddings request's texts, in the model's tokens
WORKER_KEY = "hearth:worker:{name}"  # hash, expires unless the worker's heartbeat renews it
WORKERS_KEY = "hearth:workers"  # sorted set: worker name -> unix time its heartbeat expires
MODELS_KEY = "hearth:models"  # sorted set: model -> Redis time a worker last said it serves it
EMBEDDING_MODELS_KEY = "hearth:embedding_models"  # sorted set: the same, for the models workers embed with
# Observability (hearth/metrics.py writes them, the api's /metrics and /v1/status read them).
METRICS_KEY = "hearth:metrics"  # hash: counters and histogram buckets of every process
USER_TOKENS_KEY = "hearth:metrics:user_tokens"  # hash: "<kind>:<user>" -> tokens
RECENT_JOBS_KEY = "hearth:status:jobs"  # sorted set: FinishedJob JSON by finish time, capped
QUEUE_DEPTH_KEY = "hearth:status:queue_depth"  # sorted set: depth samples by time, last hour

def job_key(job_id: str) -> str:
    return JOB_KEY.format(job_id=job_id)


ATTEMPT_SEPARATOR = "-"  # RQ id of a later attempt: "<job id>-<suffix>" (job ids are hex)


def job_of(rq_id: str) -> str:
    """The Hearth job an RQ job is an attempt of (a chat's RQ id is its job id)."""
    return rq_id.partition(ATTEMPT_SEPARATOR)[0]


def events_key(job_id: str) -> str:
    return EVENTS_KEY.format(job_id=job_id)


def vectors_key(job_id: str) -> str:
    return VECTORS_KEY.format(job_id=job_id)


def live_channel(job_id: str) -> str:
    return LIVE_CHANNEL.format(job_id=job_id)


def cancel_key(job_id: str) -> str:
    return CANCEL_KEY.format(job_id=job_id)


def preempt_channel(model: str) -> str:
    return PREEMPT_CHANNEL.format(model=model)


def worker_key(name: str) -> str:
    return WORKER_KEY.format(name=name)


def fit_key(model: str) -> str:
    return FIT_KEY.format(model=model)


class ToolCall(BaseModel):
    """A function call the assistant made: `arguments` is its JSON text, as the model wrote it."""

    id: str
    name: str
    arguments: str


def count_key(model: str) -> str:
    return COUNT_KEY.format(model=model)


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] = []  # an assistant's calls (its content may be empty)
    tool_call_id: str | None = None  # a tool message: the call it answers (its id in an earlier tool_calls)
    documents: list[DocumentRef] = []  # files attached to a user's message (hearth.documents)


class FunctionSpec(BaseModel):
    """A function the model may call: `parameters` as the caller wrote them (shown to the
    model), `enforced` the same schema checked and reduced by the api to what the grammar
    enforces (api.chat.structured), always an object schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any]
    enforced: dict[str, Any]


class ToolUse(BaseModel):
    """The functions offered to the model and how it must use them: `auto` answers in text or
    calls, `required` calls (one of `functions`; the api narrows them to the one a named
    `tool_choice` asks for), `parallel` allows several calls in one answer."""

    functions: list[FunctionSpec]
    mode: Literal["auto", "required"] = "auto"
    parallel: bool = True


class SamplingParams(BaseModel):
    """What the worker needs to generate; None means "the worker's default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = []
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = {}
    # The answer is JSON valid against this schema (already checked and reduced by the api to
    # what the worker's grammar enforces); None: free text.
    json_schema: dict[str, Any] | None = None


class Resume(BaseModel):
    """Where a paused generation stopped: its answer tokens so far, whose text was sent (the
    prompt and these are the model state the worker kept)."""

    tokens: list[int]


class JobPayload(BaseModel):
    """The argument of the RQ job. `job_id` is Hearth's id (events, status, cancel); the RQ job
    id is the same for a chat, and one per attempt for a batch line, which can be requeued."""

    job_id: str
    messages: list[Message]
    params: SamplingParams
    model: str
    user: str | None = None
    preemptible: bool = False  # a batch line: pauses when a chat arrives for its model
    resume: Resume | None = None
    tools: ToolUse | None = None  # functions the answer may call (None: a text answer)


EmbeddingInput = str | list[int]  # a text, or the model's token ids


class EmbeddingPayload(BaseModel):
    """The argument of an embedding job (`EMBED_FUNC`): every input of one `/v1/embeddings`
    request (or batch line), embedded in as few passes of the model as fit. A job that gave way
    to a chat goes back to its queue with `done` inputs already in its vectors."""

    job_id: str
    model: str
    inputs: list[EmbeddingInput]
    user: str | None = None
    dimensions: int | None = None  # as asked: refused unless the model's (checked again here, for a job queued unchecked)
    batch: bool = False  # a batch line: it waits, and goes back when it gives way, in its model's batch queue
    done: int = 0
    # A document's chunks (queued by the api after an upload, `inputs` empty): the worker reads
    # them from the document's text and keeps their vectors with it (hearth.documents).
    document_id: str | None = None


class EmbeddingModel(BaseModel):
    """What a worker publishes about a model it embeds with: the api checks a request by it."""

    dimensions: int
    max_input_tokens: int  # the longest input, in tokens
    vocabulary: int = 0  # token ids go up to this, exclusive


class FitRequest(BaseModel):
    """Asked by the api before queueing, answered by any worker of the model with its own
    tokenizer and template, so an oversized message gets its 400 before it waits in line."""

    reply_to: str  # list key the FitReply is pushed to
    expires_at: float  # Redis time (hearth.lifecycle); a worker skips requests nobody waits for any more
    messages: list[Message]
    max_tokens: int | None = None
    tools: ToolUse | None = None  # described in the prompt, so they count


class FitReply(BaseModel):
    fits: bool
    prompt_tokens: int
    n_ctx: int
    message: str = ""
    # Why it does not fit: too long, or a document the question attaches is gone (invalid_request).
    code: Literal["context_length_exceeded", "invalid_request"] = "context_length_exceeded"


class CountRequest(BaseModel):
    """Asked by the api before queueing an embeddings request whose texts might be too long
    for the model, answered by any worker that embeds with it (as a FitRequest is)."""

    reply_to: str
    expires_at: float
    texts: list[str]


class CountReply(BaseModel):
    tokens: list[int]  # each text's, as the model embeds it


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


class EventType(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    LOADING = "loading"
    CONTEXT_TRIMMED = "context_trimmed"
    TOKEN = "token"
    TOOL_CALL = "tool_call"
    REQUEUED = "requeued"
    DONE = "done"
    ERROR = "error"


class QueuedEvent(BaseModel):
    """Sent by the api (not stored) while the job waits; position 1 is next."""

    type: Literal[EventType.QUEUED] = EventType.QUEUED
    position: int
    eta_s: float | None = None


class StartedEvent(BaseModel):
    type: Literal[EventType.STARTED] = EventType.STARTED
    worker: str


class LoadingEvent(BaseModel):
    """The job's worker is loading its model first (it held others): seconds to minutes."""

    type: Literal[EventType.LOADING] = EventType.LOADING
    model: str


class ContextTrimmedEvent(BaseModel):
    type: Literal[EventType.CONTEXT_TRIMMED] = EventType.CONTEXT_TRIMMED
    messages: int
    tokens: int


class TokenEvent(BaseModel):
    """One or more consecutive tokens (coalesced when the writer or reader is behind)."""

    type: Literal[EventType.TOKEN] = EventType.TOKEN
    text: str
    tokens: int = 1


class ToolCallEvent(BaseModel):
    """Part of a function call in the answer, as its tokens come: the first part of call
    `index` has its `id` and `name`; each part carries the next piece of its JSON `arguments`."""

    type: Literal[EventType.TOOL_CALL] = EventType.TOOL_CALL
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    tokens: int = 0


ANSWER_EVENTS = (TokenEvent, ToolCallEvent)  # the answer's own output, as it is generated


class RequeuedEvent(BaseModel):
    """A batch line back in its queue: paused for a chat (it resumes where it stopped), or its
    worker was lost (it starts again, up to a bound)."""

    type: Literal[EventType.REQUEUED] = EventType.REQUEUED
    reason: Literal["paused", "worker_lost"]
    kept_tokens: int = 0  # answer tokens kept (paused), or 0 (it starts over)
    kept_inputs: int = 0  # an embedding job's inputs whose vectors are kept (paused)


class DoneEvent(BaseModel):
    type: Literal[EventType.DONE] = EventType.DONE
    finish_reason: Literal["stop", "length", "tool_calls"]
    usage: Usage
    # The attached documents the answer was given from: each read whole, or the parts of it
    # that went into the prompt (hearth.documents.Citation), in document order.
    citations: list[Citation] = []


class ErrorCode(StrEnum):
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    INVALID_REQUEST = "invalid_request"  # a request the worker refuses (the api checks before queueing when it can)
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    INTERNAL = "internal_error"


class ErrorEvent(BaseModel):
    type: Literal[EventType.ERROR] = EventType.ERROR
    code: ErrorCode
    message: str
    param: str | None = None  # the request field at fault, when one is (an embedding input too long)


Event = Annotated[
    QueuedEvent | StartedEvent | LoadingEvent | ContextTrimmedEvent | TokenEvent | ToolCallEvent | RequeuedEvent | DoneEvent
    | ErrorEvent,
    Field(discriminator="type"),
]
FINAL_EVENTS = (EventType.DONE, EventType.ERROR)

_EVENT = TypeAdapter(Event)
_FIELD = "event"  # the single field of a stream entry

START_ID = "0-0"  # stream id before the first event
K = TypeVar("K")


def decode_event(fields: dict[bytes, bytes]) -> Event:
    """The event of a stream entry."""
    return _EVENT.validate_json(fields[_FIELD.encode()])


def decode_live(message: bytes) -> tuple[str, list[tuple[str, Event]]]:
    """A published append: the stream id before it, and its (id, event) entries."""
    prev, *lines = message.decode().split("\n")
    return prev, [(entry_id, _EVENT.validate_json(raw)) for entry_id, raw in (line.split(" ", 1) for line in lines)]


def stream_id(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable value ("1700000000000-3" -> (1700000000000, 3))."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def coalesce(entries: list[tuple[K, Event]]) -> list[tuple[K, Event]]:
    """Consecutive token events merged into one (and consecutive pieces of one call's
    arguments), under the key (id) of the last: nothing dropped, fewer entries and messages,
    so whoever fell behind catches up in large steps."""
    out: list[tuple[K, Event]] = []
    for entry_id, event in entries:
        last = out[-1][1] if out else None
        if isinstance(event, TokenEvent) and isinstance(last, TokenEvent):
            out[-1] = (entry_id, TokenEvent(text=last.text + event.text, tokens=last.tokens + event.tokens))
        # A call's first part stays apart from its arguments: a Responses stream numbers the
        # call's opening events by that part alone (api.responses.objects).
        elif (isinstance(event, ToolCallEvent) and isinstance(last, ToolCallEvent) and event.index == last.index and event.id is None
              and last.id is None):
            out[-1] = (entry_id, last.model_copy(update={"arguments": last.arguments + event.arguments, "tokens": last.tokens + event.tokens}))
        else:
            out.append((entry_id, event))
    return out
