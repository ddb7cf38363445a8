"""`/v1/files`: upload batch input files and documents; read, list and delete one's own files."""

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import Response
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from api.dependencies import CurrentUser, Documents, Files, Settings
from api.documents.service import file_not_found
from api.errors import HearthError, error_responses
from api.files.store import DOCUMENT_PURPOSES, FileInfo

# A form field is never null: the schema says "an integer in bounds, or leave it out".
Seconds = Annotated[int, Field(ge=3600, le=2592000)]
router = APIRouter(prefix="/v1/files", tags=["files"], responses=error_responses(400, 401, 404, 413, 500, 503))


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def check_batch_input(data: bytes, max_lines: int) -> None:
    """A batch input file is JSONL, at most `max_lines` lines. A file with no JSON object line
    at all is not JSONL and is refused; a single bad line among good ones is the batch's to
    report (its error file), so the rest still runs."""
    lines = [line for line in data.split(b"\n") if line.strip()]
    if not lines:
        raise HearthError(400, "The file is empty: a batch file has one JSON request per line.", param="file")
    if len(lines) > max_lines:
        raise HearthError(400, f"The file has {len(lines)} lines; a batch file may have at most {max_lines}.", param="file")
    if not any(_is_object(line) for line in lines):
        raise HearthError(400, "The file is not JSONL: no line is a JSON object.", param="file")


@router.post("")
async def create_file(
    file: UploadFile,
    purpose: Annotated[str, Form(json_schema_extra={"enum": ["batch", *DOCUMENT_PURPOSES]})],  # checked below, with its own message
    user: CurrentUser,
    files: Files,
    documents: Documents,
    settings: Settings,
    expires_after_seconds: Annotated[Seconds | SkipJsonSchema[None], Form(alias="expires_after[seconds]")] = None,
) -> dict[str, object]:
    if purpose in DOCUMENT_PURPOSES:
        data = await file.read(settings.document_max_file_bytes + 1)
        info = await documents.upload(user.name, file.filename or "document", purpose, data, expires_after_seconds)
        return info.dump()
    if purpose != "batch":
        raise HearthError(400, "Hearth accepts files with purpose 'batch', 'user_data' or 'assistants'.", param="purpose")
    limit = settings.batch_max_file_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HearthError(413, f"The file is larger than {limit} bytes, the most Hearth accepts.", param="file")
    check_batch_input(data, settings.batch_max_lines)
    info = await files.create(user.name, file.filename or "upload.jsonl", purpose, data, expires_after_seconds)
    return info.dump()


@router.get("")
async def list_files(
    user: CurrentUser,
    files: Files,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> dict[str, object]:
    page = await files.page(user.name, after, limit, order, purpose)
    data = [f.dump() for f in page.items]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": page.has_more}


async def _owned(files: Files, user_name: str, file_id: str) -> FileInfo:
    info = await files.get(user_name, file_id)
    if info is None:
        raise file_not_found(file_id)
    return info


@router.get("/{file_id}")
async def retrieve_file(file_id: str, user: CurrentUser, files: Files) -> dict[str, object]:
    return (await _owned(files, user.name, file_id)).dump()


@router.get("/{file_id}/content", response_class=Response,
            responses={200: {"description": "The file, as uploaded or as written.",
                             "content": {"application/jsonl": {}, "application/octet-stream": {}}}})
async def file_content(file_id: str, user: CurrentUser, files: Files) -> Response:
    info = await files.get(user.name, file_id)
    data = None if info is None else await files.content(user.name, file_id)
    if info is None or data is None:
        raise file_not_found(file_id)
    return Response(data, media_type="application/octet-stream" if info.is_document else "application/jsonl")


@router.delete("/{file_id}")
async def delete_file(file_id: str, user: CurrentUser, documents: Documents) -> dict[str, object]:
    if not await documents.delete(user.name, file_id):
        raise file_not_found(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
