"""Ui settings."""

from pydantic import Field

from hearth.settings import CommonSettings


class UiSettings(CommonSettings):
    api_url: str = Field("", description="Base URL of the api as the ui reaches it; default `http://HOST:API_PORT/v1`.")

    def api_base(self) -> str:
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return self.api_url or f"http://{host}:{self.api_port}/v1"
