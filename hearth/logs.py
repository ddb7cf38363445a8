"""One logging set-up for api, worker and ui: JSON lines by default, text for humans.

Lines that concern a request carry its `request_id`, `job_id` and `user`: code that learns one
of them calls `bind(...)` (or `log_context(...)`), and a filter on the handler copies what is
bound in the current context (asyncio task or thread) onto every record, RQ's own included.
"""

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from hearth.settings import CommonSettings

# Attributes of a LogRecord that are not "extra" fields passed by the caller (uvicorn's
# `color_message` repeats the message with terminal colours).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}

CONTEXT_FIELDS = ("request_id", "job_id", "user")
_context: ContextVar[dict[str, str]] = ContextVar("hearth_log_context", default={})  # noqa: B039 -- never mutated: bind() sets a new dict

# Hearth's job ids (uuid4 hex): RQ names the job in its log lines' arguments.
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# Extras RQ adds to a failed job's log line: the job's arguments, i.e. the messages.
_RQ_PAYLOAD_EXTRAS = ("arguments", "kwargs")


def bind(**fields: str | None) -> Token[dict[str, str]]:
    """Attach `fields` to every later log line of this context; None removes a field."""
    merged = {**_context.get(), **fields}
    return _context.set({k: v for k, v in merged.items() if v is not None})


def unbind(token: Token[dict[str, str]]) -> None:
    _context.reset(token)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def bound() -> dict[str, str]:
    """What `bind` has attached in this context."""
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Adds the bound fields to each record (explicit `extra=` wins), names the job of RQ's
    lines logged outside a job's context, and drops RQ's copy of a job's messages unless
    prompts may be logged."""

    def __init__(self, log_prompts: bool):
        super().__init__()
        self._log_prompts = log_prompts

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        if record.name.startswith("rq"):
            if not hasattr(record, "job_id") and isinstance(record.args, tuple):
                job_id = next((a for a in record.args if isinstance(a, str) and _JOB_ID.match(a)), None)
                if job_id:
                    record.job_id = job_id
            if not self._log_prompts:
                for key in _RQ_PAYLOAD_EXTRAS:
                    record.__dict__.pop(key, None)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str):
        super().__init__()
        self._process = process_name

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "process": self._process,
            "pid": os.getpid(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time level process logger: message [request_id=… job_id=… user=…]`."""

    def __init__(self, process_name: str):
        super().__init__(f"%(asctime)s %(levelname)s {process_name} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None))
        if not context:
            return text
        head, newline, rest = text.partition("\n")  # after the message, before any traceback
        return f"{head} [{context}]{newline}{rest}"


def setup_logging(process_name: str, settings: CommonSettings, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(process_name))
    else:
        handler.setFormatter(TextFormatter(process_name))
    handler.addFilter(ContextFilter(settings.log_prompts))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
