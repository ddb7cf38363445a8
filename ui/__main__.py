"""`python -m ui`: serve the chat page on HOST:UI_PORT, talking to the api at API_URL."""

import contextlib
import io
import logging
import signal
import sys
import time
from types import FrameType

from starlette.middleware import Middleware

from hearth.logs import setup_logging
from ui.app import CSS, build_app
from ui.client import HearthClient, new_http_client
from ui.settings import UiSettings, browser_key
from ui.untrusted import ContentSecurityPolicy

log = logging.getLogger("ui")


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)  # unwinds to `finally`, which closes the server


def main() -> None:
    settings = UiSettings()
    setup_logging("ui", settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per api call is noise
    app = build_app(HearthClient(new_http_client(), settings.api_base()), browser_key(), settings.ui_concurrency)
    app.launch(
        server_name=settings.host, server_port=settings.ui_port, ssr_mode=False, css=CSS,
        quiet=True, show_error=False, prevent_thread_lock=True, app_kwargs={"middleware": [Middleware(ContentSecurityPolicy)]},
    )
    url = f"http://{settings.host}:{settings.ui_port}/"
    log.info("ui ready at %s", url, extra={"url": url, "api": settings.api_base()})
    signal.signal(signal.SIGTERM, _exit)
    try:
        while app.is_running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # Gradio prints its own line: keep logs JSON
            app.close()
        log.info("ui stopped")


if __name__ == "__main__":
    main()
