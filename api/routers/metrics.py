"""`GET /metrics`: the whole system in Prometheus text format, worker included (see api.metrics).
Like `/healthz`, it needs no API key: scrapers on the LAN read it."""

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.dependencies import RedisDep
from api.metrics import exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(redis: RedisDep) -> Response:
    return Response(await exposition(redis), media_type=CONTENT_TYPE_LATEST)
