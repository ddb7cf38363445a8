"""Admins' routes for people and their accounts (`/v1/admin/users…`): the Admin tab and the
`hearth users` CLI do the same through api.accounts.service. Anyone else gets 403."""

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api.accounts.router import NewSecret
from api.accounts.service import Revocation
from api.accounts.users import KeyInfo, UserInfo
from api.chat.schemas import Text
from api.dependencies import Accounts, Admin
from api.errors import error_responses

router = APIRouter(prefix="/v1/admin/users", tags=["admin"], responses=error_responses(400, 401, 403, 404, 409, 500, 503))

Name = Annotated[str, Path(max_length=64)]


class NewPerson(BaseModel):
    name: Annotated[Text, Field(min_length=1, max_length=64)]
    admin: bool = False


class NewPassword(BaseModel):
    password: NewSecret


class RoleChange(BaseModel):
    role: Literal["admin", "user"]


class NewKey(BaseModel):
    name: Annotated[Text, Field(max_length=64)] = ""


def person(info: UserInfo, today: dict[str, int]) -> dict[str, object]:
    return {"name": info.name, "role": info.role.value, "keys": info.keys, "created": info.created,
            "last_seen": info.last_seen, "has_password": info.has_password, "usage_today": today}


def key_object(info: KeyInfo) -> dict[str, object]:
    return {"id": info.id, "object": "hearth.api_key", "name": info.name, "created": info.created, "last_used": info.last_used}


def revocation(r: Revocation) -> dict[str, object]:
    return {"user": r.user, "deleted": r.done, "keys": r.keys, "sessions": r.sessions,
            "conversations": r.conversations, "documents": r.documents, "responses": r.responses, "usage_records": r.usage_records}


@router.get("")
async def list_people(admin: Admin, accounts: Accounts) -> dict[str, object]:
    return {"object": "list", "data": [person(info, today) for info, today in await accounts.people()]}


@router.post("")
async def add_person(body: NewPerson, admin: Admin, accounts: Accounts) -> dict[str, object]:
    """Their first API key is in this answer, and nowhere else ever."""
    key = await accounts.add(admin, body.name, body.admin)
    return {"name": body.name, "role": "admin" if body.admin else "user", "key": key}


@router.put("/{name}/password")
async def set_password(name: Name, body: NewPassword, admin: Admin, accounts: Accounts) -> dict[str, object]:
    await accounts.set_password(admin, name, body.password)
    return {"name": name, "password_set": True}


@router.post("/{name}/password/reset")
async def reset_password(name: Name, admin: Admin, accounts: Accounts) -> dict[str, object]:
    """A new random password, in this answer only."""
    return {"name": name, "password": await accounts.reset_password(admin, name)}


@router.put("/{name}/role")
async def set_role(name: Name, body: RoleChange, admin: Admin, accounts: Accounts) -> dict[str, object]:
    await accounts.set_admin(admin, name, body.role == "admin")
    return {"name": name, "role": body.role}


@router.post("/{name}/keys")
async def new_key(name: Name, body: NewKey, admin: Admin, accounts: Accounts) -> dict[str, object]:
    key, info = await accounts.new_key(admin, name, body.name)
    return {**key_object(info), "key": key}


@router.get("/{name}/revocation")
async def preview_revocation(name: Name, admin: Admin, accounts: Accounts) -> dict[str, object]:
    """What `DELETE /v1/admin/users/{name}` would delete; nothing is deleted."""
    return revocation(await accounts.revocation(name))


@router.delete("/{name}")
async def revoke(name: Name, admin: Admin, accounts: Accounts) -> dict[str, object]:
    return revocation(await accounts.revoke(admin, name))
