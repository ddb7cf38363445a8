"""`/v1/models`: every model some live worker can serve."""

from fastapi import APIRouter, Depends

from api.dependencies import Jobs, RedisDep, Settings, get_user
from api.errors import error_responses
from api.models.routing import model_map

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(get_user)], responses=error_responses(401, 500, 503))


@router.get("/models")
async def list_models(redis: RedisDep, settings: Settings, jobs: Jobs) -> dict[str, object]:
    """OpenAI's model list, plus Hearth's `capabilities` (`chat`, `embeddings`: what it is
    served for), `context_length` (for embeddings: the longest input), `dimensions` (of its
    embeddings), `loaded` (some worker holds it in memory now), `load_s` (how long it took to load, on
    average; null before its first load) and `workers` (how many serve it)."""
    chat = (await model_map(redis, settings)).live()
    embed = (await model_map(redis, settings, embeddings=True)).live()
    data = []
    for model in sorted(chat.keys() | embed.keys()):
        workers = {w.name: w for w in (*chat.get(model, []), *embed.get(model, []))}.values()
        specs = [w.embeds[model] for w in embed.get(model, [])]
        entry: dict[str, object] = {
            "id": model, "object": "model", "created": 0, "owned_by": "hearth",
            "capabilities": [kind for kind, served in (("chat", model in chat), ("embeddings", model in embed)) if served],
            "context_length": max(w.serves()[model] for w in chat[model]) if model in chat else max(s.max_input_tokens for s in specs),
            "loaded": any(model in w.loaded_models() for w in workers), "load_s": await jobs.load_s(model),
            "workers": len(workers)}
        if specs:
            entry["dimensions"] = specs[0].dimensions
        data.append(entry)
    return {"object": "list", "data": data}
