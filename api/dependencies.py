"""Request dependencies: settings, Redis clients and the job service, all built in the
lifespan and injected, so tests can override any of them."""

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis as AsyncRedis

from api.jobs import JobService
from api.settings import ApiSettings


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_redis(request: Request) -> AsyncRedis:
    return request.app.state.redis  # type: ignore[no-any-return]


def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs  # type: ignore[no-any-return]


def get_owner() -> str:
    """The calling user; accounts arrive with auth, until then everyone is `local`."""
    return "local"


Settings = Annotated[ApiSettings, Depends(get_settings)]
RedisDep = Annotated[AsyncRedis, Depends(get_redis)]
Jobs = Annotated[JobService, Depends(get_jobs)]
Owner = Annotated[str, Depends(get_owner)]
