"""Request dependencies: settings, Redis clients and the services and stores, all built in the
lifespan and injected, so tests can override any of them. The getters are `async` although
they never wait: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
dependency per request."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis as AsyncRedis

from api.accounts.service import AccountService
from api.accounts.signin_throttle import SignInThrottle
from api.accounts.users import LOCAL_USER, User, UserStore
from api.batches.store import BatchStore
from api.conversations.store import ConversationStore
from api.conversations.turns import TurnService
from api.documents.service import DocumentService
from api.errors import HearthError
from api.files.store import FileStore
from api.jobs.service import JobService
from api.responses.store import ResponseStore
from api.settings import ApiSettings
from api.sharing.store import ShareStore
from api.usage.quota import QuotaGate
from api.usage.store import QuotaStore, UsageStore
from hearth.logs import bind


async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_redis(request: Request) -> AsyncRedis:
    return request.app.state.redis  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_files(request: Request) -> FileStore:
    return request.app.state.files  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_documents(request: Request) -> DocumentService:
    return request.app.state.documents  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_batches(request: Request) -> BatchStore:
    return request.app.state.batches  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_users(request: Request) -> UserStore:
    return request.app.state.users  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_conversations(request: Request) -> ConversationStore:
    return request.app.state.conversations  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_turns(request: Request) -> TurnService:
    return request.app.state.turns  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_responses(request: Request) -> ResponseStore:
    return request.app.state.responses  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_signins(request: Request) -> SignInThrottle:
    return request.app.state.signins  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_usage(request: Request) -> UsageStore:
    return request.app.state.usage  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_quotas(request: Request) -> QuotaStore:
    return request.app.state.quotas  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_quota_gate(request: Request) -> QuotaGate:
    return request.app.state.quota_gate  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_shares(request: Request) -> ShareStore:
    return request.app.state.shares  # type: ignore[no-any-return]  # Starlette types app.state as Any


async def get_accounts(request: Request) -> AccountService:
    return request.app.state.accounts  # type: ignore[no-any-return]  # Starlette types app.state as Any


# Declares the scheme in the OpenAPI schema; the 401s are Hearth's own (auto_error=False).
_BEARER = HTTPBearer(auto_error=False, description="A Hearth API key, or a ui session token from `POST /v1/login`.")


async def bearer_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> str | None:
    """The token of `Authorization: Bearer TOKEN`, if the request sends one."""
    return credentials.credentials if credentials else None


BearerToken = Annotated[str | None, Depends(bearer_token)]


async def get_user(
    settings: Annotated[ApiSettings, Depends(get_settings)],
    users: Annotated[UserStore, Depends(get_users)],
    token: BearerToken,
) -> User:
    """The caller, from its `Authorization: Bearer` API key or ui session token."""
    if not settings.auth:
        bind(user=LOCAL_USER.name)
        return LOCAL_USER
    if token is None:
        raise HearthError(401, "Missing API key: send `Authorization: Bearer KEY` (ask your Hearth admin for a key).", code="invalid_api_key")
    user = await users.authenticate(token)
    if user is None:
        raise HearthError(401, "Incorrect API key provided.", code="invalid_api_key")
    bind(user=user.name)  # this request's later log lines name its user (an async dependency: it runs in the request's context)
    return user


Settings = Annotated[ApiSettings, Depends(get_settings)]
RedisDep = Annotated[AsyncRedis, Depends(get_redis)]
Jobs = Annotated[JobService, Depends(get_jobs)]
Users = Annotated[UserStore, Depends(get_users)]
Files = Annotated[FileStore, Depends(get_files)]
Documents = Annotated[DocumentService, Depends(get_documents)]
Batches = Annotated[BatchStore, Depends(get_batches)]
Conversations = Annotated[ConversationStore, Depends(get_conversations)]
Turns = Annotated[TurnService, Depends(get_turns)]
Responses = Annotated[ResponseStore, Depends(get_responses)]
SignIns = Annotated[SignInThrottle, Depends(get_signins)]
CurrentUser = Annotated[User, Depends(get_user)]
Usage = Annotated[UsageStore, Depends(get_usage)]
Quotas = Annotated[QuotaStore, Depends(get_quotas)]
QuotaCheck = Annotated[QuotaGate, Depends(get_quota_gate)]
Accounts = Annotated[AccountService, Depends(get_accounts)]
Shares = Annotated[ShareStore, Depends(get_shares)]


async def get_admin(user: CurrentUser) -> User:
    """The caller, who must be an admin (403 otherwise: these routes exist for everyone to see)."""
    if not user.is_admin:
        raise HearthError(403, "Only an admin may do this.", "permission_error", "admin_only")
    return user


Admin = Annotated[User, Depends(get_admin)]
