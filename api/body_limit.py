"""Request bodies larger than `MAX_BODY_BYTES` get 413 while they are read, before anything
parses them: at once when `Content-Length` says so, else (a chunked body, or a length that
lies) as soon as the bytes received pass the limit. Nothing is buffered here.

The app sees an oversized body end as a client disconnect, so it stops reading; whatever it
answers then is dropped and replaced by the 413.
"""

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import HearthError


def too_large(limit: int) -> HearthError:
    return HearthError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")


class BodyLimitMiddleware:
    """`limit` for every path but those in `paths` (an upload endpoint: its own, larger one)."""

    def __init__(self, app: ASGIApp, limit: int, paths: dict[str, int] | None = None) -> None:
        self.app, self.default, self.paths = app, limit, paths or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.paths.get(scope["path"], self.default)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await too_large(limit).response()(scope, receive, send)
            return
        received, over, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to the cut-off body; the 413 goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await too_large(limit).response()(scope, receive, send)
