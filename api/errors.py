"""One error type, rendered everywhere as OpenAI's `{"error": {...}}` JSON."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from api.openapi import allowed_methods

log = logging.getLogger(__name__)


class HearthError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers

    def body(self) -> dict[str, object]:
        param = None if self.param is None else _printable(self.param)
        return {"error": {"message": _printable(self.message), "type": self.type, "param": param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error answer (OpenAI's), declared in the OpenAPI schema."""

    error: ErrorDetail


_MEANINGS = {
    400: "Invalid request: the message names the field (`param`).",
    401: "Missing or incorrect API key.",
    403: "Not allowed: an admin's route, or a wrong current password.",
    404: "No such model, or no such object (or another user's).",
    409: "The conversation is busy (an answer is still being written in it), or an account change that would leave Hearth without an admin.",
    413: "Request body too large.",
    429: "Too many requests waiting, a quota reached (`quota_exceeded`), or too many failed sign-ins; see `Retry-After`.",
    500: "Unexpected failure; the message quotes the request id.",
    503: "Redis is unreachable; try again shortly.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, so the schema lists every answer."""
    return {status: {"model": ErrorResponse, "description": _MEANINGS[status]} for status in statuses}


def _printable(text: str) -> str:
    """`text` as valid UTF-8: a lone surrogate from a request (a dict key that names the
    param, say) is shown escaped instead of failing the response's encoding with a 500."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def redis_unavailable() -> HearthError:
    return HearthError(503, "Hearth's queue (Redis) is unreachable; try again shortly.", "service_unavailable", "redis_unavailable")


def internal_error(request_id: str) -> JSONResponse:
    """The answer to an unexpected failure (logged by api.middleware, which calls this): the
    request id to quote, never the exception text."""
    return HearthError(500, f"Internal error (request id {request_id}).", "server_error", "internal_error").response()


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    return (f"{param}: {first.get('msg')}" if param else str(first.get("msg"))), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HearthError)
    async def hearth_error(_: Request, exc: HearthError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return HearthError(400, message, param=param).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's own names only the first route's, so a path served by two routes
            # (GET and POST /v1/conversations) lost one.
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        return HearthError(exc.status_code, str(exc.detail), kind, headers=headers).response()

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unreachable: %s", exc)
        return redis_unavailable().response()
