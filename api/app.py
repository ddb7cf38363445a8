"""Assembles the api: settings, Redis clients, routers and error handlers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from api.errors import install_error_handlers
from api.jobs import JobService
from api.routers import chat, health, jobs, models
from api.settings import ApiSettings


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = AsyncRedis.from_url(settings.redis_url)
        rq_redis = Redis.from_url(settings.redis_url)  # RQ's enqueue is synchronous
        app.state.settings, app.state.redis = settings, redis
        app.state.jobs = JobService(redis, rq_redis, settings)
        try:
            yield
        finally:
            await redis.aclose()
            rq_redis.close()

    app = FastAPI(title="Hearth", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    for module in (health, models, chat, jobs):
        app.include_router(module.router)
    return app
