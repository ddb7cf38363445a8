"""Ui settings."""

import os
import secrets
from collections.abc import Mapping

from pydantic import Field

from hearth.settings import CommonSettings, data_dir

KEY_FILE = "ui-browser-key"


class UiSettings(CommonSettings):
    api_url: str = Field("", description="Base URL of the api as the ui reaches it; default `http://HOST:API_PORT/v1`.")
    # Each reply is an open HTTP stream waiting on the api's own queue, so this only guards the
    # ui process; Gradio's default of 1 would make users wait here, unseen by the api's queue.
    ui_concurrency: int = Field(64, ge=1, le=10000, description="Replies (and other chat-page events) the ui runs at once; more wait in the ui.")

    def api_base(self) -> str:
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return self.api_url or f"http://{host}:{self.api_port}/v1"


def browser_key(env: Mapping[str, str] = os.environ) -> str:
    """The key with which the page scrambles what the browser keeps for a reload (Gradio's
    `BrowserState`). Gradio hands it to every page, so it is no secret; it is kept (in
    HEARTH_DATA) only so that a restart of the ui does not make every browser's copy unreadable,
    which would sign everyone out."""
    path = data_dir(env) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        made = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        made.write_text(secrets.token_hex(32))
        try:
            os.link(made, path)  # whole or not at all, and refused if a ui beside this one made it first
        except FileExistsError:
            pass
        finally:
            made.unlink()
    return path.read_text().strip()
