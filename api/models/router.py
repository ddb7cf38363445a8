"""`/v1/models`: every model some live worker can serve."""

from fastapi import APIRouter, Depends

from api.dependencies import Jobs, RedisDep, Settings, get_user
from api.errors import error_responses
from api.models.routing import model_map

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(get_user)], responses=error_responses(401, 500, 503))


@router.get("/models")
async def list_models(redis: RedisDep, settings: Settings, jobs: Jobs) -> dict[str, object]:
    """OpenAI's model list, plus Hearth's `context_length`, `loaded` (some worker holds it in
    memory now), `load_s` (how long it took to load, on average; null before its first load)
    and `workers` (how many serve it)."""
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": "hearth",
         "context_length": max(w.serves()[model] for w in workers),
         "loaded": any(model in w.loaded_models() for w in workers), "load_s": await jobs.load_s(model), "workers": len(workers)}
        for model, workers in (await model_map(redis, settings)).live().items()
    ]
    return {"object": "list", "data": data}
