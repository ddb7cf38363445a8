"""`GET /metrics`: the whole system in Prometheus text format, worker included (see api.metrics.exposition).
Like `/healthz`, it needs no API key: scrapers on the LAN read it. Per-user figures (user
names and their token counts) only go to a caller with an admin's key or `METRICS_TOKEN`."""

import hmac

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.dependencies import BearerToken, RedisDep, Settings, Users
from api.errors import HearthError, error_responses
from api.metrics.exposition import exposition

router = APIRouter(tags=["metrics"], responses=error_responses(401, 500, 503))


@router.get("/metrics", response_class=Response,
            responses={200: {"description": "Prometheus text format.", "content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
            openapi_extra={"security": [{}]})  # besides the bearer key: optional, it adds per-user figures
async def metrics(redis: RedisDep, settings: Settings, users: Users, token: BearerToken) -> Response:
    if not settings.auth:
        per_user = True  # everyone is the one local admin
    elif token is None:
        per_user = False
    elif settings.metrics_token and hmac.compare_digest(token.encode(), settings.metrics_token.encode()):
        per_user = True
    else:
        user = await users.authenticate(token)
        if user is None:
            raise HearthError(401, "Incorrect API key provided.", code="invalid_api_key")
        per_user = user.is_admin
    return Response(await exposition(redis, per_user), media_type=CONTENT_TYPE_LATEST)
