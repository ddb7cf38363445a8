"""Assembles the api: settings, Redis clients, routers and error handlers."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from api.accounts import account_router, admin_router
from api.accounts import router as accounts
from api.accounts.service import AccountService
from api.accounts.signin_throttle import SignInThrottle
from api.accounts.users import BOOTSTRAP_ADMIN, AuthError, UserStore
from api.batches import router as batches
from api.batches.runner import BatchRunner
from api.batches.store import BatchStore
from api.body_limit import BodyLimitMiddleware
from api.chat import router as chat
from api.conversations import router as conversations
from api.conversations.store import ConversationStore
from api.conversations.turns import TurnService
from api.documents.service import file_services
from api.embeddings import router as embeddings
from api.errors import HearthError, install_error_handlers
from api.files import router as files
from api.health import router as health
from api.jobs import router as jobs
from api.jobs.filing import Filing
from api.jobs.housekeeping import Round, housekeeping
from api.jobs.reaper import Reaper
from api.jobs.service import JobService
from api.jobs.state_routing import release_held
from api.metrics import router as metrics
from api.middleware import RequestContextMiddleware
from api.models import router as models
from api.openapi import honest_openapi
from api.responses import router as responses
from api.responses.store import ResponseStore
from api.settings import ApiSettings
from api.sharing import router as sharing
from api.sharing.store import ShareStore
from api.status import router as status
from api.status.board import queue_sampler
from api.usage import router as usage
from api.usage.quota import QuotaGate
from api.usage.store import QuotaStore, UsageStore
from hearth.redis_client import connect, connect_async
from hearth.usage import UsageClock

log = logging.getLogger(__name__)

UPLOAD_FRAMING_BYTES = 65_536


async def index_old_sessions(users: UserStore) -> None:
    """Sessions made before the per-user index, put into it (UserStore.index_sessions). With
    Redis not up yet the api starts all the same (it answers 503 until Redis is), and the next
    start does it."""
    try:
        if indexed := await users.index_sessions():
            log.info("sessions indexed", extra={"sessions": indexed})
    except RedisError:
        log.warning("sessions made before the per-user index were not indexed (Redis unreachable); the next start indexes them")


async def announce(settings: ApiSettings, users: UserStore) -> None:
    """Say loudly how the api is protected; on the very first start, create the admin."""
    host = "127.0.0.1" if settings.host == "0.0.0.0" else settings.host
    ui = f"http://{host}:{settings.ui_port}"
    log.info("Hearth api at http://%s:%d/v1, ui at %s", host, settings.api_port, ui)
    if not settings.auth:
        log.warning("AUTH=off: anyone who can reach this api can use it, with no key. Only for a one-person laptop.")
        return
    log.info("Authentication is on: every /v1 request needs `Authorization: Bearer KEY`.")
    try:
        if await users.has_users():
            return
        key = await users.add(BOOTSTRAP_ADMIN, admin=True)
    except (RedisError, AuthError):
        return  # Redis not up yet, or another api created the admin first
    log.warning(
        "First start: created user %r. Its API key, shown only now: %s  — sign in to the ui at %s "
        "with user %r and this key. Add people with `hearth users add NAME`.",
        BOOTSTRAP_ADMIN, key, ui, BOOTSTRAP_ADMIN,
    )


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect_async(settings.redis_url)
        rq_redis = connect(settings.redis_url)  # RQ's enqueue is synchronous
        app.state.settings, app.state.redis = settings, redis
        app.state.jobs = JobService(redis, rq_redis, settings)
        app.state.conversations = ConversationStore(redis, settings)
        app.state.users = UserStore(redis, settings.session_ttl_s)
        app.state.usage = UsageStore(redis, UsageClock(settings.usage_timezone, settings.usage_clock_offset_s))
        app.state.quotas = QuotaStore(redis)
        app.state.quota_gate = QuotaGate(redis, app.state.quotas, app.state.usage, settings.quota_hold_tokens, settings.job_ttl_s)
        app.state.shares = ShareStore(redis)
        app.state.files, app.state.documents = file_services(redis, settings, app.state.jobs)
        app.state.turns = TurnService(app.state.jobs, app.state.conversations, app.state.documents, settings.turn_queueing_s)
        app.state.responses = ResponseStore(redis, settings.response_retention_s)
        app.state.accounts = AccountService(app.state.users, app.state.conversations, app.state.usage, app.state.shares,
                                            app.state.documents, app.state.responses)
        app.state.batches = BatchStore(redis, settings.file_retention_s)
        app.state.signins = SignInThrottle(redis, settings.login_max_failures, settings.login_lockout_s)
        await announce(settings, app.state.users)
        await index_old_sessions(app.state.users)
        try:
            reaper = Reaper(redis, rq_redis, app.state.jobs, settings)
            runner = BatchRunner(redis, rq_redis, app.state.batches, app.state.files, app.state.jobs, app.state.quota_gate, settings)
            filing = Filing(redis, app.state.jobs, runner, app.state.turns, app.state.responses)
            rounds: list[Round] = [reaper.sweep, partial(release_held, redis), filing.tick, runner.tick, app.state.files.sweep_expired]
            async with queue_sampler(redis), housekeeping(redis, rounds, settings.housekeeping_interval_s):
                yield
        finally:
            await redis.aclose()
            rq_redis.close()

    app = FastAPI(title="Hearth", version="0.1.0", lifespan=lifespan)
    app.state.draining = False  # set when the server is asked to stop: see api.__main__
    install_error_handlers(app)

    @app.exception_handler(AuthError)
    async def refused(_: Request, exc: AuthError) -> JSONResponse:
        kind = {403: "permission_error", 404: "not_found_error"}.get(exc.status, "invalid_request_error")
        return HearthError(exc.status, str(exc), kind, exc.code).response()

    app.openapi = lambda: honest_openapi(app)  # type: ignore[method-assign]  # FastAPI's documented way to replace the schema
    # An upload's multipart body is its file plus a little framing; the files router then
    # refuses a file over BATCH_MAX_FILE_BYTES or DOCUMENT_MAX_FILE_BYTES itself, with a message that says so.
    # An export file brought back is one JSON body, larger than a chat's.
    uploads = {"/v1/files": max(settings.batch_max_file_bytes, settings.document_max_file_bytes) + UPLOAD_FRAMING_BYTES,
               "/v1/conversations/import": settings.conversation_import_bytes}
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, paths=uploads)
    app.add_middleware(RequestContextMiddleware)  # outside the limit: a 413 is logged with its request id
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:  # off unless configured: browsers on other sites may not call the api
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"], expose_headers=["X-Job-Id", "X-Request-ID", chat.QUESTION_HEADER])
    for module in (health, accounts, account_router, admin_router, usage, sharing, models, chat, responses, embeddings, jobs, conversations, files, batches, metrics, status):
        app.include_router(module.router)
    return app
