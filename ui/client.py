"""The ui's only way to Hearth: the api's OpenAI chat stream over HTTP, with Hearth's own events.

Every failure becomes an `ApiError` whose message is written for the person at the keyboard;
nothing else (no exception text, no traceback) is meant to reach the page.
"""

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from hearth.contract import (
    ContextTrimmedEvent,
    DoneEvent,
    ErrorEvent,
    Event,
    LoadingEvent,
    QueuedEvent,
    StartedEvent,
    TokenEvent,
)
from hearth.documents import Citation
from hearth.sse import SseEvent, aread_sse, comment_event, parse_event

log = logging.getLogger(__name__)

# The api pings idle streams every SSE_PING_S (15 s by default); several missed pings mean
# it is gone. Connecting is local-network fast, so a slow connect is as good as refused.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
CANCEL_TIMEOUT_S = 5.0
STATUS_TIMEOUT_S = 5.0
TRANSFER_TIMEOUT_S = 120.0  # an export or import of every conversation, or a batch's results

UNREACHABLE = "Hearth's server can't be reached right now. It may be stopped or restarting; try again in a moment."
CUT_OFF = "The connection to Hearth's server was lost before the reply was finished. Try again."
UNREADABLE = "Hearth's server sent an answer the chat could not read. Try again."
SESSION_ENDED = "Your session has ended — please sign in again."
WRONG_LOGIN = "Unknown user or wrong password."


@dataclass(frozen=True)
class Delta:
    """More of the reply's text (a chat chunk's content, or a job's token event)."""

    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str | None  # "stop", or "length" when the reply hit its token limit
    citations: list[Citation] = field(default_factory=list)  # the attached documents it was given from


# What a reply shows while it waits (the contract's own events, as the api sends them), then its text and end.
WaitEvent = QueuedEvent | StartedEvent | LoadingEvent | ContextTrimmedEvent
ChatEvent = WaitEvent | Delta | Finished


class ApiError(Exception):
    """A failure to show the user: `message` is safe to display as it is."""

    def __init__(self, message: str, code: str | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.message, self.code, self.retry_after_s = message, code, retry_after_s


class SessionEnded(ApiError):
    """The api no longer accepts this session's token (its user was revoked, or it expired)."""


@dataclass(frozen=True)
class Session:
    """Who the api says this browser session is. `token` is None when the api has auth off."""

    token: str | None
    user: str
    role: str
    auth: bool


def parse_session(body: Any, token: str | None = None) -> Session:
    """A `POST /v1/login` or `GET /v1/me` answer; `token` is used when the body has none."""
    if not isinstance(body, dict) or not isinstance(body.get("user"), str) or not isinstance(body.get("auth"), bool):
        raise ApiError(UNREADABLE, "bad_login")
    given = body.get("token")
    if body["auth"] and not isinstance(given if given is not None else token, str):
        raise ApiError(UNREADABLE, "bad_login")
    return Session(given if isinstance(given, str) else token, body["user"], str(body.get("role", "user")), body["auth"])


def parse_citations(cited: Any) -> list[Citation]:
    """`file_citation`s (a chat completion's `citations`, a stored answer's annotations) as
    Citations; anything else in the list is not the page's business."""
    if not isinstance(cited, list):
        return []
    return [Citation(document_id=str(c.get("file_id", "")), filename=str(c.get("filename", "")),
                     page=c["page"] if isinstance(c.get("page"), int) else None,
                     chunk=c["chunk"] if isinstance(c.get("chunk"), int) else None)
            for c in cited if isinstance(c, dict) and c.get("type") == "file_citation"]


def new_http_client() -> httpx.AsyncClient:
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=None, max_keepalive_connections=20))


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: not worth parsing for a hint


def _error_message(body: Any) -> tuple[str | None, str | None]:
    """(message, code) from OpenAI's `{"error": {...}}`, or Nones when the body is not one."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    message, code = error.get("message"), error.get("code")
    return (message if isinstance(message, str) and message else None), (code if isinstance(code, str) else None)


def _json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_for_status(response: httpx.Response, body: Any) -> ApiError:
    """The user's view of an error response (the api's messages are written for users)."""
    message, code = _error_message(body)
    status = response.status_code
    if status == 429 and code == "quota_exceeded" and message:
        return ApiError(message, code, _retry_after(response))  # which limit, and when it resets
    if status == 429:
        retry = _retry_after(response)
        wait = f"Try again in {retry:.0f} s." if retry is not None else "Try again in a moment."
        return ApiError(f"Hearth is busy right now. {wait}", code or "rate_limited", retry)
    if status == 401:
        return SessionEnded(SESSION_ENDED, code or "unauthorized")
    if status == 403:  # signed in, but not allowed this (an admin's route; a wrong current password)
        return ApiError(message or "You are not allowed to do this.", code or "forbidden")
    if status in (502, 503, 504):
        detail = f" ({message})" if message else ""
        return ApiError(f"Hearth can't take requests right now{detail}. Try again shortly.", code or "unavailable", _retry_after(response))
    if message:
        return ApiError(message, code)
    return ApiError(f"Hearth's server answered with an error (HTTP {status}). Try again.", code)


class _EventStream:
    """A server-sent event stream from the api about one job (`job_id`): `events()`, then `aclose()`."""

    def __init__(self, response: httpx.Response):
        self._response = response
        self.job_id: str | None = response.headers.get("x-job-id")
        self.finished = False  # saw the job's end: nothing more will come

    async def _events(self) -> AsyncIterator[SseEvent]:
        """The stream's events (hearth.sse), until the job's end or the stream's."""
        try:
            async for sse in aread_sse(self._response.aiter_lines()):
                yield sse
                if self.finished:
                    return
        except httpx.TimeoutException as exc:
            log.warning("api stream timed out", extra={"job_id": self.job_id, "error": type(exc).__name__})
            raise ApiError(CUT_OFF, "timeout") from None
        except httpx.HTTPError as exc:
            log.warning("api stream broke", extra={"job_id": self.job_id, "error": type(exc).__name__})
            raise ApiError(CUT_OFF, "connection_lost") from None
        if not self.finished:
            raise ApiError(CUT_OFF, "connection_lost")

    async def aclose(self) -> None:
        await self._response.aclose()


def _wait_event(event: Event | None) -> WaitEvent | None:
    """The events a reply shows while it waits; None for the others (and for types this ui
    does not know: they are for newer uis)."""
    return event if isinstance(event, QueuedEvent | StartedEvent | LoadingEvent | ContextTrimmedEvent) else None


class ChatStream(_EventStream):
    """One streaming chat completion: `job_id` names its job, `item_id` its question as stored in
    its conversation (if it has one); iterate `events()`, then `aclose()`."""

    def __init__(self, response: httpx.Response):
        super().__init__(response)
        self.item_id: str | None = response.headers.get("x-conversation-item-id")

    async def events(self) -> AsyncIterator[ChatEvent]:
        async for sse in self._events():
            for comment in sse.comments:  # Hearth's events; keep-alive pings
                if (waiting := self._comment(comment)) is not None:
                    yield waiting
            if sse.data:
                for event in self._data(sse.data):
                    yield event

    def _comment(self, text: str) -> WaitEvent | None:
        try:
            return _wait_event(comment_event(text))
        except ValueError:
            log.warning("unreadable hearth event ignored", extra={"job_id": self.job_id})
        return None

    def _data(self, payload: str) -> list[ChatEvent]:
        if payload == "[DONE]":
            self.finished = True
            return []
        try:
            body = json.loads(payload)
        except ValueError:
            raise ApiError(UNREADABLE, "bad_stream") from None
        message, code = _error_message(body)
        if message is not None or (isinstance(body, dict) and "error" in body):
            self.finished = True
            raise ApiError(message or "Hearth could not finish the reply. Try again.", code)
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list):
            raise ApiError(UNREADABLE, "bad_stream")
        events: list[ChatEvent] = []
        try:
            for choice in choices:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    events.append(Delta(str(delta["content"])))
                if choice.get("finish_reason"):  # Hearth's `citations` come in this chunk
                    events.append(Finished(str(choice["finish_reason"]), parse_citations(body.get("citations"))))
        except AttributeError:
            raise ApiError(UNREADABLE, "bad_stream") from None
        return events


class JobStream(_EventStream):
    """`GET /v1/jobs/{id}/events` from the start: a reply already under way, followed again
    (after a reload, or back in its conversation), as the same events as a chat stream."""

    async def events(self) -> AsyncIterator[ChatEvent]:
        async for sse in self._events():
            if not sse.data:
                continue  # keep-alive pings
            try:
                event = parse_event(sse.data)
            except ValueError:
                raise ApiError(UNREADABLE, "bad_stream") from None
            if isinstance(event, TokenEvent):
                yield Delta(event.text)
            elif isinstance(event, DoneEvent):
                self.finished = True
                yield Finished(event.finish_reason, event.citations)
            elif isinstance(event, ErrorEvent):
                self.finished = True
                raise ApiError(event.message, event.code.value)
            elif (waiting := _wait_event(event)) is not None:
                yield waiting


class HearthClient:
    """The api at `base_url` (ending in `/v1`), called with this session's key if it has one."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str | None = None):
        self._http, self._base, self._key = http, base_url.rstrip("/"), api_key

    def with_key(self, api_key: str | None) -> "HearthClient":
        """The same connection pool, speaking for another session."""
        return HearthClient(self._http, self._base, api_key)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    async def open_chat(self, messages: list[dict[str, Any]], conversation: str | None = None, replace_from: str | None = None,
                        **params: Any) -> ChatStream:
        """Submit a streaming chat (its turn stored in `conversation`, if given, in place of its
        stored message `replace_from` and all after it, if given; `params` such as `temperature`);
        returns once the api has answered with its headers."""
        body = {"messages": messages, "stream": True, **params}
        if conversation is not None:
            body["conversation"] = conversation
        if replace_from is not None:
            body["replace_from"] = replace_from
        return ChatStream(await self._open_stream(self._http.build_request("POST", f"{self._base}/chat/completions", json=body,
                                                                           headers={**self._headers(), "Accept": "text/event-stream"})))

    async def follow(self, job_id: str) -> JobStream:
        """A job's events from its start (`GET /v1/jobs/{id}/events`)."""
        return JobStream(await self._open_stream(self._http.build_request("GET", f"{self._base}/jobs/{job_id}/events",
                                                                          headers={**self._headers(), "Accept": "text/event-stream"})))

    async def _open_stream(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TimeoutException:
            log.warning("api did not answer", extra={"url": self._base})
            raise ApiError(UNREACHABLE, "api_timeout") from None
        except httpx.HTTPError as exc:
            log.warning("api unreachable", extra={"url": self._base, "error": type(exc).__name__})
            raise ApiError(UNREACHABLE, "api_unreachable") from None
        if response.status_code == 200:
            return response
        try:
            await response.aread()
            body = response.json()
        except (httpx.HTTPError, ValueError):
            body = None
        finally:
            await response.aclose()
        error = error_for_status(response, body)
        log.warning("api refused the stream", extra={"status": response.status_code, "code": error.code})
        raise error

    async def cancel(self, job_id: str) -> None:
        """Ask the api to stop `job_id`; failures are logged, not raised (the api also cancels
        a job whose stream was closed)."""
        try:
            response = await self._http.post(f"{self._base}/jobs/{job_id}/cancel", headers=self._headers(), timeout=CANCEL_TIMEOUT_S)
            if response.status_code >= 400:
                log.warning("job cancel refused", extra={"job_id": job_id, "status": response.status_code})
        except httpx.HTTPError as exc:
            log.warning("job cancel failed", extra={"job_id": job_id, "error": type(exc).__name__})

    async def _call(self, method: str, path: str, timeout: float = STATUS_TIMEOUT_S, **kwargs: Any) -> tuple[httpx.Response, Any]:
        """One api call answered with JSON; a failure to connect or to read its JSON is an `ApiError`."""
        response = await self._request(method, path, timeout, **kwargs)
        body = _json_of(response)
        if body is None and response.status_code == 200:
            raise ApiError(UNREADABLE, "bad_answer")
        return response, body

    async def _request(self, method: str, path: str, timeout: float, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, f"{self._base}{path}", timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("api unreachable", extra={"url": self._base, "error": type(exc).__name__})
            raise ApiError(UNREACHABLE, "api_unreachable") from None

    async def _content(self, path: str, **params: str) -> bytes:
        """A download (a file, an export): its bytes, whatever their type."""
        response = await self._request("GET", path, TRANSFER_TIMEOUT_S, headers=self._headers(), params=params)
        if response.status_code != 200:
            raise error_for_status(response, _json_of(response))
        return response.content

    async def login(self, username: str, secret: str, address: str | None = None) -> Session:
        """`POST /v1/login` with a password or an API key. Neither is ever logged. `address`
        is the browser's, for the api's count of failed sign-ins per address (the api takes
        `X-Forwarded-For` from a proxy it trusts: uvicorn's `FORWARDED_ALLOW_IPS`, by default
        127.0.0.1)."""
        headers = {"X-Forwarded-For": address} if address else {}
        response, body = await self._call("POST", "/login", json={"username": username, "password": secret}, headers=headers)
        if response.status_code == 401:
            message, code = _error_message(body)
            raise ApiError(message or WRONG_LOGIN, code or "invalid_credentials")
        if response.status_code != 200:
            raise error_for_status(response, body)
        return parse_session(body)

    async def logout(self) -> None:
        """`POST /v1/logout`: the api forgets this session's token. A failure is logged, not
        raised: the page forgets the token anyway, and the token expires on its own."""
        try:
            response, _ = await self._call("POST", "/logout", headers=self._headers())
        except ApiError:
            return
        if response.status_code != 200:
            log.warning("sign-out refused", extra={"status": response.status_code})

    async def me(self) -> Session | None:
        """`GET /v1/me` with this session's token (or none): None when the api wants a sign-in."""
        response, body = await self._call("GET", "/me", headers=self._headers())
        if response.status_code == 401:
            return None
        if response.status_code != 200:
            raise error_for_status(response, body)
        return parse_session(body, self._key)

    async def status(self) -> dict[str, Any]:
        """`GET /v1/status`: the queue, running and recent jobs this session may see."""
        response, body = await self._call("GET", "/status", headers=self._headers())
        if response.status_code != 200:
            raise error_for_status(response, body)
        return body

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response, body = await self._call(method, path, headers={**self._headers(), **kwargs.pop("headers", {})}, **kwargs)
        if response.status_code != 200:
            raise error_for_status(response, body)
        return body

    async def start_batch(self, filename: str, jsonl: bytes) -> dict[str, Any]:
        """Upload a batch input file and run it (`POST /v1/files`, then `/v1/batches`)."""
        uploaded = await self._json("POST", "/files", files={"file": (filename, jsonl)}, data={"purpose": "batch"})
        return await self._json("POST", "/batches", json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                                          "completion_window": "24h"})

    async def batches(self) -> list[dict[str, Any]]:
        """This session's batches, newest first."""
        return (await self._json("GET", "/batches", params={"limit": 100}))["data"]

    async def cancel_batch(self, batch_id: str) -> None:
        await self._json("POST", f"/batches/{batch_id}/cancel")

    async def batch(self, batch_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/batches/{batch_id}")

    async def upload_document(self, filename: str, data: bytes) -> dict[str, Any]:
        """A document for chats (`POST /v1/files`, purpose `user_data`): the file object, whose
        text the api has read; a file it cannot read is an `ApiError` saying why."""
        return await self._json("POST", "/files", files={"file": (filename, data)}, data={"purpose": "user_data"},
                                timeout=TRANSFER_TIMEOUT_S)

    async def delete_file(self, file_id: str) -> None:
        await self._json("DELETE", f"/files/{file_id}")

    async def file_content(self, file_id: str | None) -> bytes:
        return await self._content(f"/files/{file_id}/content") if file_id else b""

    # Conversations (`/v1/conversations`): the chat page's sidebar and its turns.

    async def conversations(self, query: str | None = None) -> list[dict[str, Any]]:
        """This session's conversations, most recently active first (the first 100), or those
        whose title or text contains `query`."""
        params: dict[str, Any] = {"limit": 100, **({"q": query} if query else {})}
        return (await self._json("GET", "/conversations", params=params))["data"]

    async def new_conversation(self, metadata: dict[str, str]) -> dict[str, Any]:
        return await self._json("POST", "/conversations", json={"metadata": metadata})

    async def conversation(self, conv_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/conversations/{conv_id}")

    async def set_metadata(self, conv_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        return await self._json("POST", f"/conversations/{conv_id}", json={"metadata": metadata})

    async def delete_conversation(self, conv_id: str) -> None:
        await self._json("DELETE", f"/conversations/{conv_id}")

    async def models(self) -> list[dict[str, Any]]:
        """`/v1/models`: each model a worker serves, whether one holds it `loaded`, and its `load_s`."""
        return list((await self._json("GET", "/models"))["data"])

    async def chat_defaults(self) -> dict[str, str]:
        """The metadata (settings) this user's new chats start with."""
        return (await self._json("GET", "/conversations/defaults"))["metadata"]

    async def set_chat_defaults(self, metadata: dict[str, str]) -> None:
        await self._json("POST", "/conversations/defaults", json={"metadata": metadata})

    async def export_all(self) -> bytes:
        """Every conversation of this user with its messages: the export file."""
        return await self._content("/conversations/export")

    async def export_markdown(self, conv_id: str) -> bytes:
        return await self._content(f"/conversations/{conv_id}/export", format="markdown")

    async def import_conversations(self, exported: bytes) -> dict[str, Any]:
        """An export file brought back; what is here already is not added twice."""
        return await self._json("POST", "/conversations/import", content=exported, timeout=TRANSFER_TIMEOUT_S,
                                headers={"Content-Type": "application/json"})

    async def items(self, conv_id: str) -> list[dict[str, Any]]:
        """Every message of the conversation, oldest first."""
        found: list[dict[str, Any]] = []
        after = None
        while True:
            page = await self._json("GET", f"/conversations/{conv_id}/items",
                                    params={"order": "asc", "limit": 100, **({"after": after} if after else {})})
            found += page["data"]
            if not page["has_more"]:
                return found
            after = page["last_id"]

    # People and accounts (`/v1/admin/…`, admins only; `/v1/account/…` and `/v1/usage`, everyone's own).

    async def people(self) -> list[dict[str, Any]]:
        """Everyone, with their role, keys, last request and usage today."""
        return (await self._json("GET", "/admin/users"))["data"]

    async def add_person(self, name: str, admin: bool) -> str:
        """Their first API key: shown once."""
        return str((await self._json("POST", "/admin/users", json={"name": name, "admin": admin}))["key"])

    async def set_password(self, name: str, password: str) -> None:
        await self._json("PUT", f"/admin/users/{name}/password", json={"password": password})

    async def reset_password(self, name: str) -> str:
        """A new random password: shown once."""
        return str((await self._json("POST", f"/admin/users/{name}/password/reset"))["password"])

    async def set_role(self, name: str, admin: bool) -> None:
        await self._json("PUT", f"/admin/users/{name}/role", json={"role": "admin" if admin else "user"})

    async def revocation(self, name: str) -> dict[str, Any]:
        """What revoking `name` would delete; nothing is deleted."""
        return await self._json("GET", f"/admin/users/{name}/revocation")

    async def revoke(self, name: str) -> dict[str, Any]:
        return await self._json("DELETE", f"/admin/users/{name}")

    async def set_quota(self, name: str, quota: dict[str, int | None]) -> None:
        await self._json("PUT", f"/admin/users/{name}/quota", json=quota)

    async def quotas(self) -> dict[str, Any]:
        """Everyone's default limits and each person's own."""
        return await self._json("GET", "/admin/quotas")

    async def set_default_quota(self, quota: dict[str, int | None]) -> None:
        await self._json("PUT", "/admin/quotas/default", json=quota)

    async def usage(self) -> dict[str, Any]:
        """This session's usage today, this week and this month, with its quota and what is left."""
        return await self._json("GET", "/usage")

    async def my_keys(self) -> list[dict[str, Any]]:
        return (await self._json("GET", "/account/keys"))["data"]

    async def create_key(self, name: str) -> str:
        """A new API key: shown once."""
        return str((await self._json("POST", "/account/keys", json={"name": name}))["key"])

    async def revoke_key(self, key_id: str) -> None:
        await self._json("DELETE", f"/account/keys/{key_id}")

    async def change_password(self, current: str, new: str) -> None:
        await self._json("PUT", "/account/password", json={"current": current, "new": new})

    async def sign_out_everywhere(self) -> int:
        return int((await self._json("POST", "/account/sign-out-everywhere"))["sessions_ended"])

    # Sharing (`/v1/conversations/{id}/shares`, `/v1/shared…`).

    async def shared(self) -> list[dict[str, Any]]:
        """Conversations others shared with this session's person, each with its `owner`."""
        return (await self._json("GET", "/shared"))["data"]

    async def shared_conversation(self, owner: str, conv_id: str) -> dict[str, Any]:
        """One of them with its messages (read-only)."""
        return await self._json("GET", f"/shared/{owner}/{conv_id}")

    async def fork(self, owner: str, conv_id: str) -> dict[str, Any]:
        """A copy of one of them among one's own conversations."""
        return await self._json("POST", f"/shared/{owner}/{conv_id}/fork")

    async def shares(self, conv_id: str) -> list[str]:
        return (await self._json("GET", f"/conversations/{conv_id}/shares"))["data"]

    async def share(self, conv_id: str, grantee: str) -> list[str]:
        return (await self._json("POST", f"/conversations/{conv_id}/shares", json={"with": grantee}))["data"]

    async def unshare(self, conv_id: str, grantee: str) -> list[str]:
        return (await self._json("DELETE", f"/conversations/{conv_id}/shares/{grantee}"))["data"]
