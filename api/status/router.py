"""`GET /v1/status`: queue, running jobs, recent jobs and the last hour, for the ui's Status tab."""

from fastapi import APIRouter

from api.dependencies import CurrentUser, RedisDep
from api.errors import error_responses
from api.status.board import build_status

router = APIRouter(prefix="/v1", tags=["status"], responses=error_responses(401, 500, 503))


@router.get("/status")
async def get_status(redis: RedisDep, user: CurrentUser) -> dict[str, object]:
    """Admins see every job; a user sees their own."""
    return await build_status(redis, user)
