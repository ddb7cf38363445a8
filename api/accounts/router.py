"""Sign-in and sign-out for the ui (`POST /v1/login`, `POST /v1/logout`) and who-am-I
(`GET /v1/me`)."""

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.accounts.users import MIN_PASSWORD, AuthError
from api.chat.schemas import NAME_CHARS, Text
from api.dependencies import BearerToken, CurrentUser, Settings, SignIns, Users
from api.errors import HearthError, error_responses

router = APIRouter(prefix="/v1", tags=["auth"], responses=error_responses(400, 401, 413, 500, 503))

SECRET_CHARS = 1024  # passwords and API keys
# A password being set: the schema says the service's bound (which refuses a shorter one with
# its own code, `password_too_short`), so that a client reading the schema sends a valid one.
NewSecret = Annotated[Text, Field(max_length=SECRET_CHARS, json_schema_extra={"minLength": MIN_PASSWORD})]


class Login(BaseModel):
    username: Annotated[Text, Field(max_length=NAME_CHARS)]
    password: Annotated[Text, Field(max_length=SECRET_CHARS)]  # the user's password, or one of its API keys


@router.post("/login", responses=error_responses(429))
async def login(body: Login, request: Request, users: Users, signins: SignIns, settings: Settings) -> dict[str, object]:
    if not settings.auth:
        return {"token": None, "user": "local", "role": "admin", "auth": False}
    address = request.client.host if request.client else ""
    wait = await signins.retry_after(body.username, address)
    if wait is not None:
        raise HearthError(429, f"Too many failed sign-ins; try again in {wait} s.", "rate_limit_error",
                          "too_many_sign_ins", headers={"Retry-After": str(wait)})
    try:
        token = await users.login(body.username, body.password)
    except AuthError as exc:
        await signins.failed(body.username, address)
        raise HearthError(401, str(exc), code="invalid_credentials") from None
    await signins.succeeded(body.username)
    user = await users.authenticate(token)
    assert user is not None
    return {"token": token, "user": user.name, "role": user.role.value, "auth": True}


@router.get("/me")
async def me(user: CurrentUser, settings: Settings) -> dict[str, object]:
    return {"user": user.name, "role": user.role.value, "auth": settings.auth}


@router.post("/logout")
async def logout(user: CurrentUser, users: Users, token: BearerToken) -> dict[str, object]:
    """End the session whose token signs this request, so a copy of it left anywhere is
    useless. An API key is not a session: it stays valid until `hearth users revoke`."""
    ended = token is not None and await users.logout(token)
    return {"user": user.name, "signed_out": ended}
