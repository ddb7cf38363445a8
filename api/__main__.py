"""`python -m api`: serve the api with uvicorn on HOST:API_PORT."""

from types import FrameType

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.settings import ApiSettings
from hearth.logs import setup_logging


class Server(uvicorn.Server):
    """Marks the app as draining on SIGTERM/SIGINT: streams then end without cancelling their
    jobs, so clients can re-attach to `/v1/jobs/{id}/events` after a restart."""

    def __init__(self, app: FastAPI, config: uvicorn.Config):
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.draining = True
        super().handle_exit(sig, frame)


def main() -> None:
    settings = ApiSettings()
    setup_logging("api", settings)
    app = create_app(settings)
    Server(app, uvicorn.Config(app, host=settings.host, port=settings.api_port, log_config=None, access_log=False)).run()


if __name__ == "__main__":
    main()
