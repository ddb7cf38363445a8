"""A person's own account (`/v1/account…`): their password, their API keys, their sessions."""

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api.accounts.admin_router import NewKey, key_object
from api.accounts.router import SECRET_CHARS, NewSecret
from api.chat.schemas import Text
from api.dependencies import Accounts, CurrentUser
from api.errors import error_responses

router = APIRouter(prefix="/v1/account", tags=["account"], responses=error_responses(400, 401, 404, 500, 503))


class PasswordChange(BaseModel):
    current: Annotated[Text, Field(max_length=SECRET_CHARS)] = ""  # may be empty while none is set
    new: NewSecret


@router.put("/password", responses=error_responses(403))
async def change_password(body: PasswordChange, user: CurrentUser, accounts: Accounts) -> dict[str, object]:
    await accounts.change_own_password(user, body.current, body.new)
    return {"name": user.name, "password_set": True}


@router.get("/keys")
async def list_keys(user: CurrentUser, accounts: Accounts) -> dict[str, object]:
    return {"object": "list", "data": [key_object(k) for k in await accounts.users.keys(user.name)]}


@router.post("/keys")
async def create_key(body: NewKey, user: CurrentUser, accounts: Accounts) -> dict[str, object]:
    """The key is in this answer, and nowhere else ever."""
    key, info = await accounts.new_key(user, user.name, body.name)
    return {**key_object(info), "key": key}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: Annotated[str, Path(max_length=64)], user: CurrentUser, accounts: Accounts) -> dict[str, object]:
    await accounts.revoke_key(user, user.name, key_id)
    return {"id": key_id, "object": "hearth.api_key", "deleted": True}


@router.post("/sign-out-everywhere")
async def sign_out_everywhere(user: CurrentUser, accounts: Accounts) -> dict[str, object]:
    """Ends every ui session of the caller's (this page's too); API keys stay valid."""
    return {"name": user.name, "sessions_ended": await accounts.sign_out_everywhere(user)}
