"""Sign-in and sign-out for the ui (`POST /v1/login`, `POST /v1/logout`) and who-am-I
(`GET /v1/me`)."""

from typing import Annotated

from fastapi import APIRouter, Header
from pydantic import BaseModel

from api.auth import AuthError
from api.dependencies import CurrentUser, Settings, Users, bearer_token
from api.errors import HearthError

router = APIRouter(prefix="/v1", tags=["auth"])


class Login(BaseModel):
    username: str
    password: str  # the user's password, or one of its API keys


@router.post("/login")
async def login(body: Login, users: Users, settings: Settings) -> dict[str, object]:
    if not settings.auth:
        return {"token": None, "user": "local", "role": "admin", "auth": False}
    try:
        token = await users.login(body.username, body.password)
    except AuthError as exc:
        raise HearthError(401, str(exc), code="invalid_credentials") from None
    user = await users.authenticate(token)
    assert user is not None
    return {"token": token, "user": user.name, "role": user.role.value, "auth": True}


@router.get("/me")
async def me(user: CurrentUser, settings: Settings) -> dict[str, object]:
    return {"user": user.name, "role": user.role.value, "auth": settings.auth}


@router.post("/logout")
async def logout(user: CurrentUser, users: Users, authorization: Annotated[str, Header()] = "") -> dict[str, object]:
    """End the session whose token signs this request, so a copy of it left anywhere is
    useless. An API key is not a session: it stays valid until `hearth users revoke`."""
    token = bearer_token(authorization)
    ended = token is not None and await users.logout(token)
    return {"user": user.name, "signed_out": ended}
