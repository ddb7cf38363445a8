"""`/v1/models`: the models that live workers have loaded."""

from fastapi import APIRouter, Depends

from api.dependencies import RedisDep, get_user
from api.workers import live_workers
from api.errors import error_responses

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(get_user)], responses=error_responses(401, 500, 503))


@router.get("/models")
async def list_models(redis: RedisDep) -> dict[str, object]:
    models: dict[str, dict[str, object]] = {}
    for w in await live_workers(redis):
        models.setdefault(w.model, {"id": w.model, "object": "model", "created": 0, "owned_by": "hearth", "context_length": w.n_ctx, "workers": 0})
        models[w.model]["workers"] += 1  # type: ignore[operator]
    return {"object": "list", "data": list(models.values())}
