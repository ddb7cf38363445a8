"""An embeddings request checked, routed and made into its job: what the router and a batch's
`/v1/embeddings` lines share."""

import secrets
from typing import Any

from api.batches import LineMaker, PendingLine
from api.embeddings.schemas import EmbeddingRequest, check_embedding
from api.routing import ModelMap
from hearth.contract import EmbeddingPayload


def prepare(body: EmbeddingRequest, models: ModelMap, max_inputs: int, owner: str, batch: bool = False) -> tuple[EmbeddingPayload, str]:
    """The job for `body` and the model whose queues it waits in, after the checks (400) and
    routing (404) an embeddings request gets before anything is queued. `models` is the
    embedding models' map (api.routing.model_map with `embeddings`)."""
    route = models.route(body.model)
    workers = models.live().get(route.model, [])
    check_embedding(body, max_inputs, workers[0].embeds[route.model] if workers else None)
    payload = EmbeddingPayload(job_id=secrets.token_hex(16), model=route.model, inputs=body.inputs(), user=owner,
                               dimensions=body.dimensions, batch=batch)
    return payload, route.queue_model


def embedding_lines(owner: str, models: ModelMap, max_inputs: int) -> LineMaker:
    """A batch's `/v1/embeddings` lines: each one job, in its model's batch queue."""

    def make(raw: Any, index: int, custom_id: str) -> PendingLine:
        body = EmbeddingRequest.model_validate(raw)
        payload, queue_model = prepare(body, models, max_inputs, owner, batch=True)
        return PendingLine(index=index, custom_id=custom_id, payload=payload.model_copy(update={"model": queue_model}),
                           encoding_format=body.encoding_format)

    return make
