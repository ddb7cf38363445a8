"""Ui settings."""

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from hearth.settings import CommonSettings, data_dir

SECRET_FILE = "ui-session-secret"


class UiSettings(CommonSettings):
    api_url: str = Field("", description="Base URL of the api as the ui reaches it; default `http://HOST:API_PORT/v1`.")
    ui_session_secret: str = Field(
        "", description="Key that encrypts what the browser keeps for a reload (the session token, the open chat). Empty: "
                        f"one made at the ui's first start and kept in `.hearth/{SECRET_FILE}` (`HEARTH_DATA`), so restarting "
                        "the ui signs nobody out. Give every ui process behind one address the same.")

    def api_base(self) -> str:
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return self.api_url or f"http://{host}:{self.api_port}/v1"


def browser_secret(settings: UiSettings, env: Mapping[str, str] = os.environ) -> str:
    """UI_SESSION_SECRET, else the one this machine's ui made before (made now if none)."""
    if settings.ui_session_secret:
        return settings.ui_session_secret
    path = data_dir(env) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_hex(32))
    except FileExistsError:
        pass  # made at an earlier start (or by a ui starting beside this one)
    return Path(path).read_text().strip()
