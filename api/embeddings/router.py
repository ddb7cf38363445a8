"""`POST /v1/embeddings`: one job per request in its model's embedding queue; the api waits for
its vectors (it never loads a model) and renders them as OpenAI does."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.chat.rendering import error_of
from api.chat.service import queue_job, wait_for_answer
from api.dependencies import CurrentUser, Jobs, QuotaCheck, RedisDep, Settings
from api.embeddings.schemas import EmbeddingRequest, render
from api.embeddings.service import check_lengths, prepare
from api.errors import error_responses
from api.models.routing import model_map
from hearth.contract import DoneEvent, ErrorEvent, vectors_key

router = APIRouter(prefix="/v1", tags=["embeddings"], responses=error_responses(400, 401, 404, 413, 429, 500, 503))


@router.post("/embeddings", response_model=None,
             responses={200: {"description": "A `list` of `embedding` objects, in the order of the inputs, with `usage`."}})
async def create_embeddings(body: EmbeddingRequest, request: Request, jobs: Jobs, user: CurrentUser, redis: RedisDep,
                            settings: Settings, quota: QuotaCheck) -> JSONResponse:
    prepared = prepare(body, await model_map(redis, settings, embeddings=True), settings.embedding_max_inputs, user.name)
    await check_lengths(jobs, prepared)
    job = await queue_job(jobs, quota, prepared.payload, user.name, prepared.queue_model)
    answer = await wait_for_answer(jobs, job, request, settings.poll_s)
    if isinstance(answer.final, ErrorEvent):
        raise error_of(answer.final)
    assert isinstance(answer.final, DoneEvent)
    vectors = await redis.getdel(vectors_key(job.id))  # read once: nobody needs them after
    if not isinstance(vectors, bytes):
        raise RuntimeError("an embedding job ended without its vectors")
    # Thousands of vectors as JSON numbers take a while: not on the event loop.
    content = await run_in_threadpool(render, vectors, len(body.inputs()), job.model,
                                      answer.final.usage.prompt_tokens, body.encoding_format)
    return JSONResponse(content, headers={"X-Job-Id": job.id})
