"""A job's record (hearth.job_record): every field its hash holds through a job's life is one
`JobRecord` declares (or a status time), and the record reads back what was asked."""

import openai

from devstack import MODEL, Stack, wait_for
from hearth.contract import Sink, job_key
from hearth.job_record import JobRecord
from hearth.lifecycle import JobStatus
from hearth.redis_client import text_hash

STATUS_TIMES = {f"{status.value}_at" for status in JobStatus}


def test_a_conversation_turns_record_holds_only_declared_fields(stack: Stack, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    raw = client.chat.completions.with_raw_response.create(
        model="any", messages=[{"role": "user", "content": "Say hello."}], max_tokens=6, extra_body={"conversation": conv.id})
    job_id = raw.headers["X-Job-Id"]
    wait_for(lambda: stack.redis.hget(job_key(job_id), "status") == b"completed", 60, "the turn's job to end")
    fields = text_hash(stack.redis.hgetall(job_key(job_id)))
    assert set(fields) - STATUS_TIMES <= set(JobRecord.model_fields) - {"id"}, fields
    assert {"running_at", "completed_at"} <= set(fields)
    record = JobRecord.of(job_id, fields)
    assert (record.owner, record.model, record.status, record.max_tokens) == ("local", MODEL, JobStatus.COMPLETED, 6)
    assert (record.sink, record.conversation, record.attempt) == (Sink.CONVERSATION, conv.id, job_id)
    assert record.worker and record.not_after and record.queue == f"interactive:{MODEL}"


def test_a_record_round_trips_through_its_fields() -> None:
    record = JobRecord(id="j1", owner="ann", model="m", created=1, queue="batch:m", not_after=2.5, max_tokens=7,
                       sink=Sink.BATCH, batch="batch_1", custom_id="c", line=3)
    written = {str(k): str(v) for k, v in record.fields().items()}
    assert "id" not in written and written["status"] == "queued"
    assert JobRecord.of("j1", written) == record
