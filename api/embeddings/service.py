"""An embeddings request checked, routed and made into its job: what the router and a batch's
`/v1/embeddings` lines share."""

import secrets
from dataclasses import dataclass
from typing import Any

from api.batches.store import LineMaker, PendingLine
from api.embeddings.schemas import EmbeddingRequest, check_embedding
from api.errors import HearthError
from api.jobs.service import JobService
from api.models.routing import ModelMap
from hearth.contract import EmbeddingModel, EmbeddingPayload

# Tokens an input may have beyond one per byte of its text: the special tokens the model's
# tokenizer adds around it (BOS, EOS). A text of fewer bytes than the bound less these fits.
ADDED_TOKENS = 4


@dataclass(frozen=True)
class PreparedEmbedding:
    payload: EmbeddingPayload
    queue_model: str  # whose queues it waits in (api.models.routing)
    model: EmbeddingModel | None  # what a live worker says of the model, None when none is up


def prepare(body: EmbeddingRequest, models: ModelMap, max_inputs: int, owner: str, batch: bool = False) -> PreparedEmbedding:
    """The job for `body`, after the checks (400) and routing (404) an embeddings request gets
    before anything is queued. `models` is the embedding models' map (api.models.routing.model_map
    with `embeddings`)."""
    route = models.route(body.model)
    workers = models.live().get(route.model, [])
    spec = workers[0].embeds[route.model] if workers else None
    check_embedding(body, max_inputs, spec)
    payload = EmbeddingPayload(job_id=secrets.token_hex(16), model=route.model, inputs=body.inputs(), user=owner,
                               dimensions=body.dimensions, batch=batch)
    return PreparedEmbedding(payload, route.queue_model, spec)


async def check_lengths(jobs: JobService, prepared: PreparedEmbedding) -> None:
    """A text that might be longer than the model embeds is counted by a worker with the
    model's tokenizer before anything is queued (400 naming it); one that surely fits is not.
    With no worker to ask (or none answering in time), the worker counts it when it runs."""
    spec, payload = prepared.model, prepared.payload
    if spec is None:
        return
    doubtful = [(i, text) for i, text in enumerate(payload.inputs)
                if isinstance(text, str) and len(text.encode()) + ADDED_TOKENS > spec.max_input_tokens]
    if not doubtful:
        return
    counts = await jobs.count_tokens(payload.model, [text for _, text in doubtful])
    for (index, _), tokens in zip(doubtful, counts or []):
        if tokens > spec.max_input_tokens:
            raise HearthError(400, f"input[{index}] has {tokens} tokens; this model embeds at most {spec.max_input_tokens} "
                                   "tokens per input.", code="context_length_exceeded", param=f"input.{index}")


def embedding_lines(owner: str, models: ModelMap, max_inputs: int) -> LineMaker:
    """A batch's `/v1/embeddings` lines: each one job, in its model's batch queue."""

    def make(raw: Any, index: int, custom_id: str) -> PendingLine:
        body = EmbeddingRequest.model_validate(raw)
        prepared = prepare(body, models, max_inputs, owner, batch=True)
        return PendingLine(index=index, custom_id=custom_id, payload=prepared.payload.model_copy(update={"model": prepared.queue_model}),
                           encoding_format=body.encoding_format)

    return make
