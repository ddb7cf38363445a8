"""`/v1/batches`: run a file of chat requests in the background (api.batch_runner)."""

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.batches import ENDPOINTS, BatchInfo, BatchStore, window_seconds
from api.dependencies import Batches, CurrentUser, Files, RedisDep, Settings
from api.errors import HearthError, error_responses
from api.housekeeping import nudge
from hearth.metadata import METADATA_KEY_CHARS, METADATA_PAIRS, METADATA_VALUE_CHARS

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=error_responses(400, 401, 404, 413, 500, 503))


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: str
    endpoint: Annotated[str, Field(json_schema_extra={"enum": list(ENDPOINTS)})]  # checked by create_batch, with its own message
    completion_window: str
    metadata: dict[str, str] | None = None
    output_expires_after: dict[str, object] | None = None

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata is not None and (len(metadata) > METADATA_PAIRS or any(
                len(k) > METADATA_KEY_CHARS or len(v) > METADATA_VALUE_CHARS for k, v in metadata.items())):
            raise ValueError(f"at most {METADATA_PAIRS} pairs, keys of at most {METADATA_KEY_CHARS} characters, "
                             f"values of at most {METADATA_VALUE_CHARS}")
        return metadata


async def _owned(batches: BatchStore, batch_id: str, owner: str) -> BatchInfo:
    batch = await batches.get(batch_id, owner)
    if batch is None:
        raise HearthError(404, f"No batch found with id '{batch_id}'.", "invalid_request_error", "batch_not_found", "batch_id")
    return batch


@router.post("")
async def create_batch(body: BatchRequest, user: CurrentUser, batches: Batches, files: Files, settings: Settings,
                       redis: RedisDep) -> dict[str, object]:
    if body.endpoint not in ENDPOINTS:
        raise HearthError(400, f"Hearth runs batches of {' and '.join(ENDPOINTS)} only.", param="endpoint")
    window_s = window_seconds(body.completion_window, settings.batch_longest_window_s)
    source = await files.get(user.name, body.input_file_id)
    if source is None or source.purpose != "batch":
        raise HearthError(400, f"No batch input file {body.input_file_id!r}: upload one with purpose 'batch'.", param="input_file_id")
    batch = await batches.create(user.name, body.endpoint, body.input_file_id, body.completion_window, window_s, body.metadata)
    await nudge(redis)  # validated and fed now, not at the next round
    return batch.dump()


@router.get("")
async def list_batches(
    user: CurrentUser, batches: Batches, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> dict[str, object]:
    page, has_more = await batches.page(user.name, after, limit)
    data = [b.dump() for b in page]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


@router.get("/{batch_id}")
async def retrieve_batch(batch_id: str, user: CurrentUser, batches: Batches) -> dict[str, object]:
    return (await _owned(batches, batch_id, user.name)).dump()


@router.post("/{batch_id}/cancel")
async def cancel_batch(batch_id: str, user: CurrentUser, batches: Batches, redis: RedisDep) -> dict[str, object]:
    """Answers at once in `cancelling`; the batch runner stops its lines and ends it."""
    await _owned(batches, batch_id, user.name)
    await batches.move(batch_id, "cancelling", "validating", "in_progress")
    await nudge(redis)
    return (await _owned(batches, batch_id, user.name)).dump()
