"""Api settings."""

from pydantic import Field

from hearth.settings import CommonSettings


class ApiSettings(CommonSettings):
    auth: bool = Field(True, description="Require `Authorization: Bearer KEY` on /v1 (`AUTH=off` for a one-person laptop).")
    max_waiting_per_user: int = Field(2, ge=1, description="Interactive jobs one user may have waiting; more get 429.")
    max_queued: int = Field(32, ge=1, description="Interactive jobs waiting in all; more get 429.")
    max_queue_wait_s: int = Field(600, ge=1, description="Longest a job may wait for a worker; then it ends with a `timeout` error.")
    fit_check_s: float = Field(2.0, gt=0, le=4, description="How long to wait for a worker to count a prompt before queueing it.")
    poll_s: float = Field(1.0, gt=0, le=4, description="How often a waiting stream re-checks queue position and worker liveness.")
    sse_ping_s: int = Field(15, ge=1, description="Keep-alive comment interval on idle event streams.")
    # Limits on what one request may ask: refused (400/413) before anything is queued.
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body in bytes; a larger one gets 413 while it is read, before it is parsed.")
    max_messages: int = Field(2048, ge=1, description="Most messages in one chat request.")
    max_message_chars: int = Field(262_144, ge=1, description="Longest content of one message, in characters.")
    max_stop_chars: int = Field(256, ge=1, description="Longest `stop` string, in characters (at most 4 of them, as at OpenAI).")
    max_logit_bias: int = Field(300, ge=1, description="Most `logit_bias` entries in one request.")
    # Secrets and the network.
    login_max_failures: int = Field(5, ge=1, description="Failed ui sign-ins allowed per user name and per address within `LOGIN_LOCKOUT_S`; then 429 with Retry-After.")
    login_lockout_s: int = Field(300, ge=1, description="Window over which failed sign-ins are counted, and how long a locked sign-in waits.")
    metrics_token: str = Field("", description="Bearer token that lets a scraper see `/metrics` per user (an admin's key does too); empty: admins only.")
    cors_origins: str = Field("", description="Comma-separated browser origins allowed to call the api (CORS); empty: none.")
