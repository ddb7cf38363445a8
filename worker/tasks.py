"""The job functions RQ calls by name (`hearth.contract.GENERATE_FUNC`, `EMBED_FUNC`)."""

from contextvars import ContextVar
from typing import Any

from hearth.contract import EmbeddingPayload, JobPayload
from worker.runner import JobRunner

# Bound by HearthWorker around each job, the way RQ binds the current job: the function is
# imported by name, so the worker's loaded model can only reach it through context.
current_runner: ContextVar[JobRunner] = ContextVar("current_runner")


def generate(payload: dict[str, Any]) -> dict[str, Any]:
    return current_runner.get().run(JobPayload.model_validate(payload))


def embed(payload: dict[str, Any]) -> dict[str, Any]:
    return current_runner.get().embed(EmbeddingPayload.model_validate(payload))
