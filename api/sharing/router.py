"""Sharing a conversation read-only (`/v1/conversations/{id}/shares`) and what others shared
(`/v1/shared…`): read it, or continue it as one's own copy. Only signed-in people: every route
needs a key or a session, and a conversation not shared with the caller answers 404."""

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api.accounts.users import NoSuchUser
from api.chat.schemas import Text
from api.conversations.schemas import ExportedConversation
from api.dependencies import Conversations, CurrentUser, Shares, Users
from api.errors import HearthError, error_responses
from api.sharing.store import EVERYONE
from hearth.metadata import METADATA_PAIRS

router = APIRouter(prefix="/v1", tags=["sharing"], responses=error_responses(400, 401, 404, 500, 503))

Name = Annotated[str, Path(max_length=64)]
ConvId = Annotated[str, Path(max_length=128)]


class Share(BaseModel):
    with_: Annotated[Text, Field(alias="with", min_length=1, max_length=64, description="A user name, or `*` for everyone on this Hearth.")]


def _not_shared(conv_id: str) -> HearthError:
    return HearthError(404, f"No conversation {conv_id!r} is shared with you.", "not_found_error", "conversation_not_found", "conversation_id")


@router.get("/conversations/{conversation_id}/shares")
async def list_shares(conversation_id: ConvId, user: CurrentUser, conversations: Conversations, shares: Shares) -> dict[str, object]:
    """Who one's conversation is shared with (`*`: everyone)."""
    await conversations.get(user.name, conversation_id)  # 404 unless it is the caller's
    return {"object": "list", "data": await shares.grantees(user.name, conversation_id)}


@router.post("/conversations/{conversation_id}/shares")
async def share(conversation_id: ConvId, body: Share, user: CurrentUser, conversations: Conversations, shares: Shares,
                users: Users) -> dict[str, object]:
    await conversations.get(user.name, conversation_id)
    grantee = body.with_
    if grantee != EVERYONE and (grantee == user.name or not await users.exists(grantee)):
        raise NoSuchUser(grantee) if grantee != user.name else HearthError(400, "It is yours already.", param="with")
    await shares.share(user.name, conversation_id, grantee)
    return {"object": "list", "data": await shares.grantees(user.name, conversation_id)}


@router.delete("/conversations/{conversation_id}/shares/{name}")
async def stop_sharing(conversation_id: ConvId, name: Name, user: CurrentUser, conversations: Conversations, shares: Shares) -> dict[str, object]:
    await conversations.get(user.name, conversation_id)
    removed = await shares.unshare(user.name, conversation_id, name)
    return {"object": "list", "data": await shares.grantees(user.name, conversation_id), "removed": removed}


@router.get("/shared")
async def shared_with_me(user: CurrentUser, conversations: Conversations, shares: Shares) -> dict[str, object]:
    """Conversations others shared with the caller (or with everyone), with their owner."""
    found = []
    for owner, conv_id in await shares.shared_with(user.name):
        try:
            conv = await conversations.get(owner, conv_id)
        except HearthError:  # deleted since: its shares go too
            await shares.forget(owner, conv_id)
            continue
        found.append({**conv.model_dump(exclude={"hearth_job_id"}), "owner": owner})
    return {"object": "list", "data": found}


async def _readable(owner: str, conv_id: str, user: str, shares: Shares, conversations: Conversations) -> ExportedConversation:
    if not await shares.may_read(user, owner, conv_id):
        raise _not_shared(conv_id)
    try:
        return await conversations.exported(owner, conv_id)
    except HearthError:
        raise _not_shared(conv_id) from None


@router.get("/shared/{owner}/{conversation_id}")
async def read_shared(owner: Name, conversation_id: ConvId, user: CurrentUser, conversations: Conversations, shares: Shares) -> dict[str, object]:
    """The conversation with its messages, read-only."""
    return {**(await _readable(owner, conversation_id, user.name, shares, conversations)).model_dump(), "owner": owner}


@router.post("/shared/{owner}/{conversation_id}/fork")
async def fork(owner: Name, conversation_id: ConvId, user: CurrentUser, conversations: Conversations, shares: Shares) -> dict[str, object]:
    """Continue it as one's own: a new conversation of the caller's with its messages; the
    original stays as it is."""
    original = await _readable(owner, conversation_id, user.name, shares, conversations)
    metadata = dict(original.metadata)
    if len(metadata) < METADATA_PAIRS:
        metadata["forked_from"] = f"{owner}/{conversation_id}"
    conv = await conversations.create(user.name, metadata, original.items)
    return conv.model_dump()
