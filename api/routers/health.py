"""Liveness and readiness probes (no auth: load balancers and `make run` poll them)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError

from api.dependencies import RedisDep
from api.workers import live_workers

router = APIRouter(tags=["health"])


class Unready(BaseModel):
    status: str
    reason: str


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Unready, "description": "Redis is unreachable, or no worker is up."}})
async def readyz(redis: RedisDep) -> JSONResponse:
    try:
        await redis.ping()  # type: ignore[misc]
        workers = await live_workers(redis)
    except RedisError:
        return JSONResponse({"status": "unavailable", "reason": "Redis is unreachable."}, status_code=503)
    if not workers:
        reason = "No worker is running with a model loaded; requests will wait in the queue until one starts."
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ready", "workers": len(workers), "busy": sum(w.state == "busy" for w in workers)})
