"""`python -m worker`: load the model once, then serve jobs until stopped."""

import logging

from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job

from hearth.contract import QUEUES
from hearth.logs import setup_logging
from worker.control import CancelListener, Heartbeat
from worker.engine import Engine, load_vocab
from worker.fit_check import FitChecker
from worker.prompter import Prompter
from worker.events import EventWriter
from worker.runner import JobRunner
from worker.settings import WorkerSettings
from worker.tasks import current_runner

log = logging.getLogger("worker")


# SimpleWorker runs each job in this process: RQ's default Worker forks a child per job, which
# would either reload the model every job or fork llama.cpp with its threads alive, and would
# throw away the KV state that lets a returning conversation skip its history.
class HearthWorker(SimpleWorker):
    def __init__(self, *args: object, runner: JobRunner, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.runner = runner

    def execute_job(self, job: Job, queue: Queue) -> None:
        token = current_runner.set(self.runner)
        try:
            super().execute_job(job, queue)
        finally:
            current_runner.reset(token)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        self.runner.shutdown()


def main() -> None:
    settings = WorkerSettings()
    setup_logging("worker", settings)
    redis = Redis.from_url(settings.redis_url)
    engine = Engine(settings)
    log.info("model %s loaded, n_ctx=%d", engine.model_id, engine.n_ctx)
    FitChecker(redis, engine.model_id, Prompter(load_vocab(settings.model_path), engine.n_ctx, settings.default_max_tokens))
    runner = JobRunner(settings.worker_name, engine, EventWriter(redis, settings.job_ttl_s), CancelListener(redis))
    heartbeat = Heartbeat(redis, settings.worker_name, runner.info, settings.heartbeat_interval_s, settings.heartbeat_ttl_s)
    heartbeat.start()
    worker = HearthWorker(
        [Queue(name, connection=redis) for name in QUEUES],
        connection=redis,
        name=settings.worker_name,
        runner=runner,
    )
    try:
        worker.work(with_scheduler=False, logging_level=logging.getLevelName(logging.getLogger().level))
    finally:
        heartbeat.stop()


if __name__ == "__main__":
    main()
