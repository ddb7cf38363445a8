"""Sign-in for the ui (`POST /v1/login`) and who-am-I (`GET /v1/me`)."""

from fastapi import APIRouter
from pydantic import BaseModel

from api.auth import AuthError
from api.dependencies import CurrentUser, Settings, Users
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
