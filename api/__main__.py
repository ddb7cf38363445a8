"""`python -m api`: serve the api with uvicorn on HOST:API_PORT."""

import uvicorn

from api.app import create_app
from api.settings import ApiSettings
from hearth.logs import setup_logging


def main() -> None:
    settings = ApiSettings()
    setup_logging("api", settings)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.api_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
