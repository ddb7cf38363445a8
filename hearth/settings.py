"""Settings every Hearth process shares, and the README table generated from all of them."""

import os
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Read once from the environment at start-up, then passed explicitly."""

    # An empty variable (`MODEL_PATH=`) means "unset": take the default.
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True, env_ignore_empty=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis for queues and events. `make run` starts a local redis-server when unset.",
    )
    host: str = Field("127.0.0.1", description="Interface the api and ui listen on (0.0.0.0 for the LAN).")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the OpenAI-compatible api (`http://HOST:API_PORT/v1`).")
    ui_port: int = Field(7860, ge=1, le=65535, description="Port of the chat ui.")
    job_ttl_s: int = Field(86400, ge=60, description="How long a job's status, result and replayable events are kept.")
    log_format: str = Field("json", pattern="^(json|text)$", description="`json` lines, or `text` for humans.")
    log_prompts: bool = Field(False, description="Log message content. Off: privacy is the point.")
    usage_timezone: str = Field("UTC", description="Timezone whose midnight ends a day of usage and quotas (e.g. `Europe/Paris`); days are read off Redis's clock.")
    usage_clock_offset_s: float = Field(0.0, ge=-86400 * 400, le=86400 * 400, description="Seconds added to Redis's clock when dating usage. Only for tests that cross a midnight; leave 0.")

    @field_validator("usage_timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"no timezone {value!r} (an IANA name such as `Europe/Paris`)") from None
        return value


class DocumentRankingSettings(CommonSettings):
    """What the api and the worker both read: the api queues the embedding of each new
    document's chunks with this model, the worker embeds questions with it."""

    document_embedding_model: str = Field("", description="Model whose embeddings rank a long document's chunks together with BM25 (an id that `/v1/models` says embeds: a file of `EMBEDDING_MODELS`, or a chat model); each new document's chunks are embedded once, after upload. Empty: BM25 alone. Off by default: a chat model's pooled embeddings rank poorly; use a real embedding model (nomic-embed-text, bge-small, Qwen3-Embedding).")


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where `make run` keeps local state (Redis's data, supervisord's configuration)."""
    return Path(env.get("HEARTH_DATA") or ".hearth")


def settings_table(*classes: type[BaseSettings]) -> str:
    """The README's settings table: one row per environment variable, first class wins."""
    rows = ["| variable | default | used by | description |", "| --- | --- | --- | --- |"]
    seen: set[str] = set()
    for cls in classes:
        for name, field in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            users = ", ".join(c.__module__.split(".")[0] for c in classes if name in c.model_fields)
            default = field.get_default(call_default_factory=False)
            shown = "(computed)" if field.default_factory else f"`{default}`" if default != "" else '`""`'
            rows.append(f"| `{name.upper()}` | {shown} | {users} | {field.description or ''} |")
    return "\n".join(rows)


START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def main() -> None:
    """`python -m hearth.settings [README.md]`: the table of every process's settings, printed
    or written between the README's markers."""
    import importlib
    import sys
    from pathlib import Path

    classes = [
        getattr(importlib.import_module(f"{package}.settings"), name)
        for package, name in (("api", "ApiSettings"), ("worker", "WorkerSettings"), ("ui", "UiSettings"))
    ]
    table = settings_table(*classes)
    if len(sys.argv) < 2:
        sys.stdout.write(table + "\n")
        return
    readme = Path(sys.argv[1])
    head, _, rest = readme.read_text().partition(START)
    readme.write_text(f"{head}{START}\n{table}\n{END}{rest.partition(END)[2]}")


if __name__ == "__main__":
    main()
