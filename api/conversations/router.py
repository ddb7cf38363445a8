"""`/v1/conversations`: OpenAI's Conversations API over the caller's own conversations, plus
what a chat app needs and OpenAI lacks: a newest-first list, search, export and import."""

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from api.conversations.schemas import (
    ConversationDefaults,
    ConversationExport,
    CreateConversation,
    CreateItems,
    UpdateConversation,
    attached,
    cursor_page,
)
from api.dependencies import Conversations, CurrentUser, Documents
from api.errors import error_responses

router = APIRouter(prefix="/v1/conversations", tags=["conversations"], responses=error_responses(400, 401, 404, 413, 500, 503))

Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")]
After = Annotated[str | None, Query(description="The id of the last object of the previous page.")]


@router.post("")
async def create_conversation(body: CreateConversation, store: Conversations, user: CurrentUser) -> dict[str, object]:
    conv = await store.create(user.name, body.metadata, [m.to_item() for m in body.items or []])
    return conv.model_dump()


@router.get("")
async def list_conversations(
    store: Conversations, user: CurrentUser, after: After = None, limit: Limit = 20,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description="Only conversations whose title or text contains this.")] = None,
) -> dict[str, object]:
    """Hearth's own: the caller's conversations, most recently active first."""
    found, more = await (store.search(user.name, q, after, limit) if q else store.recent(user.name, after, limit))
    return cursor_page(found, more)


# Declared before `/{conversation_id}`, which would otherwise take these paths.
@router.get("/export")
async def export_conversations(store: Conversations, user: CurrentUser) -> JSONResponse:
    document = ConversationExport(exported_at=int(time.time()), conversations=await store.export(user.name))
    return JSONResponse(document.model_dump(), headers={"Content-Disposition": 'attachment; filename="hearth-conversations.json"'})


@router.post("/import")
async def import_conversations(body: ConversationExport, store: Conversations, user: CurrentUser) -> dict[str, object]:
    created, added = await store.import_(user.name, body.conversations)
    return {"object": "hearth.conversation_import", "conversations": len(body.conversations), "created": created, "items_added": added}


@router.get("/defaults")
async def get_defaults(store: Conversations, user: CurrentUser) -> ConversationDefaults:
    """Hearth's own: the metadata the caller's new chats start with (a chat app's settings,
    such as its system prompt); the server applies none of it by itself."""
    return ConversationDefaults(metadata=await store.defaults(user.name))


@router.post("/defaults")
async def set_defaults(body: ConversationDefaults, store: Conversations, user: CurrentUser) -> ConversationDefaults:
    """Replaces the caller's defaults (as `metadata` is replaced on a conversation)."""
    await store.set_defaults(user.name, body.metadata)
    return body


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, store: Conversations, user: CurrentUser) -> dict[str, object]:
    return (await store.get(user.name, conversation_id)).model_dump()


@router.post("/{conversation_id}")
async def update_conversation(conversation_id: str, body: UpdateConversation, store: Conversations, user: CurrentUser) -> dict[str, object]:
    return (await store.update(user.name, conversation_id, body.metadata or {})).model_dump()


@router.delete("/{conversation_id}")
async def delete_conversation(conversation_id: str, store: Conversations, user: CurrentUser, documents: Documents) -> dict[str, object]:
    # The documents its questions sent inline go with it (those it held; an uploaded file stays).
    # After it: a turn standing meanwhile holds its question's, then finds the question gone.
    await documents.delete_held(user.name, conversation_id, attached(await store.delete(user.name, conversation_id)))
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/{conversation_id}/export", response_model=None,
            responses={200: {"description": "Markdown, or with `format=json` as in the export.", "content": {"text/markdown": {}}}})
async def export_conversation(
    conversation_id: str, store: Conversations, user: CurrentUser, format: Literal["markdown", "json"] = "markdown",
) -> PlainTextResponse | JSONResponse:
    exported = await store.exported(user.name, conversation_id)
    if format == "json":
        return JSONResponse(exported.model_dump())
    disposition = f'attachment; filename="{conversation_id}.md"'
    return PlainTextResponse(exported.markdown(), media_type="text/markdown; charset=utf-8", headers={"Content-Disposition": disposition})


@router.get("/{conversation_id}/items")
async def list_items(
    conversation_id: str, store: Conversations, user: CurrentUser, after: After = None, limit: Limit = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, object]:
    found, more = await store.items(user.name, conversation_id, after, limit, order)
    return cursor_page(found, more)


@router.post("/{conversation_id}/items")
async def create_items(conversation_id: str, body: CreateItems, store: Conversations, user: CurrentUser) -> dict[str, object]:
    return cursor_page(await store.add_items(user.name, conversation_id, [m.to_item() for m in body.items]))


@router.get("/{conversation_id}/items/{item_id}")
async def get_item(conversation_id: str, item_id: str, store: Conversations, user: CurrentUser) -> dict[str, object]:
    return (await store.item(user.name, conversation_id, item_id)).model_dump()


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, store: Conversations, user: CurrentUser, documents: Documents) -> dict[str, object]:
    conv, deleted = await store.delete_item(user.name, conversation_id, item_id)
    await documents.delete_held(user.name, conversation_id, attached([deleted]))
    return conv.model_dump()
