"""Api settings."""

from pydantic import Field

from hearth.settings import CommonSettings


class ApiSettings(CommonSettings):
    fit_check_s: float = Field(2.0, gt=0, le=4, description="How long to wait for a worker to count a prompt before queueing it.")
    poll_s: float = Field(1.0, gt=0, le=4, description="How often a waiting stream re-checks queue position and worker liveness.")
    sse_ping_s: int = Field(15, ge=1, description="Keep-alive comment interval on idle event streams.")
