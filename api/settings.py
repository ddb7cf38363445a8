"""Api settings."""

from pydantic import Field

from hearth.settings import CommonSettings


class ApiSettings(CommonSettings):
    job_timeout_s: int = Field(900, ge=10, description="Longest a generation may run before it is ended.")
    result_ttl_s: int = Field(86400, ge=60, description="How long a finished job's status and result are kept.")
    poll_s: float = Field(1.0, gt=0, le=4, description="How often a waiting stream re-checks queue position and worker liveness.")
    sse_ping_s: int = Field(15, ge=1, description="Keep-alive comment interval on idle event streams.")
