"""Liveness and readiness probes (no auth: load balancers and `make run` poll them)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError

from api.dependencies import RedisDep, Settings
from api.models.routing import model_map

router = APIRouter(tags=["health"])


class Unready(BaseModel):
    status: str
    reason: str
    models: list[str] = []  # served by a live worker (none, when no worker is up)
    waiting: list[str] = []  # served recently; their requests wait for a worker


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Unready, "description": "Redis is unreachable, or no worker is up."}})
async def readyz(redis: RedisDep, settings: Settings) -> JSONResponse:
    """Ready while some worker is live; `models` are those with a live worker, `waiting` those
    served recently whose worker is away (their requests wait for it)."""
    try:
        await redis.ping()
        models = await model_map(redis, settings)
    except RedisError:
        return JSONResponse({"status": "unavailable", "reason": "Redis is unreachable."}, status_code=503)
    live = list(models.live())
    away = [m for m in models.recent if m not in live]
    if not models.workers:
        reason = "No worker is running with a model loaded; requests will wait in the queue until one starts."
        return JSONResponse({"status": "unavailable", "reason": reason, "models": [], "waiting": away}, status_code=503)
    return JSONResponse({"status": "ready", "workers": len(models.workers), "busy": sum(w.state == "busy" for w in models.workers),
                         "models": live, "waiting": away})
