"""Request context: every request gets an id, the caller's `X-Request-ID` or a new one, bound
to every log line it causes and returned in the `X-Request-ID` response header. One log line
per request when it ends; an unexpected error is logged there once, with its stack trace, and
answered with a 500 that quotes the id. Chat requests refused with 429 are counted here.

A plain ASGI middleware, not Starlette's `BaseHTTPMiddleware`: the endpoint runs in this
middleware's own task, so what it binds to the log context (job id, user) is seen here too,
and streamed responses pass through untouched.
"""

import logging
import re
import time
import uuid

from redis.exceptions import RedisError
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import internal_error
from api.metrics.exposition import count_rejected
from hearth.logs import bind, unbind

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # anything else from a caller is replaced
_QUIET = ("/healthz", "/readyz", "/metrics")  # probes and scrapes: their lines are debug
_COUNTED_REJECTIONS = ("POST", "/v1/chat/completions")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = given if _VALID_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id  # request.state.request_id
        token = bind(request_id=request_id, job_id=None, user=None)
        began = time.perf_counter()
        status: list[int] = []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
                status.append(message["status"])
                if message["status"] == 429 and (scope["method"], scope["path"]) == _COUNTED_REJECTIONS:
                    await _count_rejected(scope)  # before the client can see the refusal
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"method": scope["method"], "path": scope["path"]})
            if not status:
                await internal_error(request_id)(scope, receive, send_with_id)
            # Not re-raised: uvicorn would log the same stack trace a second time.
        finally:
            code = status[0] if status else 500
            log.log(
                logging.DEBUG if scope["path"] in _QUIET else logging.INFO,
                "%s %s %d", scope["method"], scope["path"], code,
                extra={"method": scope["method"], "path": scope["path"], "status": code,
                       "duration_ms": round((time.perf_counter() - began) * 1000, 1)},
            )
            unbind(token)


async def _count_rejected(scope: Scope) -> None:
    try:
        await count_rejected(scope["app"].state.redis)
    except RedisError as exc:
        log.warning("could not count a rejected request: %s", exc)

