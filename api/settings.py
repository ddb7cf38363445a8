"""Api settings."""

from pydantic import Field, field_validator

from hearth.settings import DocumentRankingSettings, data_dir


class ApiSettings(DocumentRankingSettings):
    auth: bool = Field(True, description="Require `Authorization: Bearer KEY` on /v1 (`AUTH=off` for a one-person laptop).")
    max_waiting_per_user: int = Field(2, ge=1, description="Interactive jobs one user may have waiting; more get 429.")
    max_queued: int = Field(32, ge=1, description="Interactive jobs waiting in all; more get 429.")
    max_queue_wait_s: int = Field(600, ge=1, description="Longest a job may wait for a worker; then it ends with a `timeout` error.")
    fit_check_s: float = Field(2.0, gt=0, le=4, description="How long to wait for a worker to count a prompt before queueing it.")
    poll_s: float = Field(1.0, gt=0, le=4, description="How often a waiting stream re-checks queue position and worker liveness.")
    quota_hold_tokens: int = Field(512, ge=1, description="Tokens a request that sets no `max_tokens` holds against its owner's token quota while it waits or runs (it then counts what it used).")
    # Routing by `model` (api.models.routing).
    model_aliases: str = Field("", description="Other names for served models, `alias=model,...` (e.g. `gpt-4o-mini=SmolLM2-135M-Instruct.Q4_1`).")
    default_model: str = Field("", description="Model that answers requests naming no served model; empty: those get 404 `model_not_found`.")
    model_memory_s: int = Field(86400, ge=0, description="How long a model stays routable after its last worker went away: requests for it wait for a worker instead of getting 404.")
    sse_ping_s: int = Field(15, ge=1, description="Keep-alive comment interval on idle event streams.")
    housekeeping_interval_s: float = Field(0.5, gt=0, le=5, description="Longest time between two rounds of the one api process that looks for jobs of dead workers and chats past their queue deadline, files answers and moves batches on (a round also starts at once when such work arrives).")
    batch_line_retries: int = Field(2, ge=0, le=10, description="Times a batch line is run again after its worker died; then it fails.")
    batch_slice: int = Field(2, ge=1, le=100, description="Batch lines waiting in each model's batch queue at once; the rest wait in Redis, fed in as lines finish.")
    batch_max_file_bytes: int = Field(32 * 2**20, ge=1024, description="Largest batch input file accepted (413 above).")
    batch_max_lines: int = Field(50_000, ge=1, description="Most lines in one batch input file.")
    batch_longest_window_s: int = Field(7 * 86400, ge=60, description="Longest `completion_window` a batch may ask for (`24h`, or e.g. `90m`).")
    file_retention_s: int = Field(30 * 86400, ge=60, description="How long files, batch results and ended batches are kept.")
    # Documents (files with purpose `user_data`, or sent inline in a chat): api.documents.
    document_max_file_bytes: int = Field(32 * 2**20, ge=1024, description="Largest document accepted (a `user_data` file, or one sent inline as `file_data`); 413 above.")
    document_storage_mb_per_user: int = Field(512, ge=1, description="Document bytes one person may keep (their `user_data` files and the documents they sent inline, while kept); an upload or inline document past it gets 413 saying how much is used.")
    document_max_pages: int = Field(2000, ge=1, description="Most pages (or sections) of a document whose text is read; a longer one gets 400.")
    document_max_chars: int = Field(4_000_000, ge=1000, description="Most characters of text extracted from one document; a longer one gets 400.")
    document_extract_cpu_s: int = Field(30, ge=1, le=600, description="CPU seconds the process that reads one document's text may use; a document that needs more gets 400.")
    document_extract_wall_s: float = Field(60, gt=0, le=600, description="Wall-clock seconds reading one document's text may take; a document that takes longer gets 400.")
    document_extract_memory_mb: int = Field(1024, ge=128, description="Address space of the process that reads one document's text (a decompression bomb stops there, with 400).")
    document_extractions: int = Field(2, ge=1, le=64, description="Documents read at once by one api process; more wait their turn (each in its own bounded process).")
    blob_dir: str = Field(default_factory=lambda: str(data_dir() / "blobs"), description="Folder of document bytes when no S3 store is configured (default `.hearth/blobs`, under `HEARTH_DATA`): for a one-machine install.")
    s3_endpoint: str = Field("", description="S3-compatible object store for document bytes (`http://minio:9000`, `https://s3.eu-west-1.amazonaws.com`); empty: the local `BLOB_DIR`.")
    s3_bucket: str = Field("hearth-documents", description="Bucket of document bytes in `S3_ENDPOINT` (created if missing).")
    s3_access_key: str = Field("", description="Access key for `S3_ENDPOINT`.")
    s3_secret_key: str = Field("", description="Secret key for `S3_ENDPOINT`.")
    s3_region: str = Field("", description="Region of `S3_BUCKET`, when the store wants one (AWS does); empty: the store's default.")
    response_retention_s: int = Field(30 * 86400, ge=60, description="How long a stored response (`/v1/responses` with `store: true`) is kept after it was created.")
    conversations_per_user: int = Field(1000, ge=1, description="Conversations one user may keep on the server; creating or importing more gets 400.")
    conversation_items: int = Field(2000, ge=1, description="Items one conversation may hold (messages, function calls and their outputs); adding more gets 400 (an answer to an accepted message is always kept).")
    conversation_text_chars: int = Field(100_000, ge=1, description="Longest text of one stored item (a message's text, a function call's arguments or its output), in characters; longer gets 400.")
    turn_queueing_s: int = Field(60, ge=5, le=3600, description="How long a conversation stays busy for an answer whose job has not been queued yet; a job missing for longer never will be (its api stopped between storing the question and queueing): its turn is withdrawn (the question goes, what it replaced comes back) and the conversation is freed.")
    conversation_import_bytes: int = Field(64 * 2**20, ge=1024, description="Largest body of a conversation import (an export file), in bytes; 413 above. Its own bound: one user's export outgrows `MAX_BODY_BYTES`.")
    # Limits on what one request may ask: refused (400/413) before anything is queued.
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body in bytes; a larger one gets 413 while it is read, before it is parsed.")
    max_messages: int = Field(2048, ge=1, description="Most messages in one chat request.")
    max_message_chars: int = Field(262_144, ge=1, description="Longest content of one message, in characters.")
    max_stop_chars: int = Field(256, ge=1, description="Longest `stop` string, in characters (at most 4 of them, as at OpenAI).")
    max_logit_bias: int = Field(300, ge=1, description="Most `logit_bias` entries in one request.")
    max_tools: int = Field(32, ge=1, le=128, description="Most functions offered in one request (`tools`, or the legacy `functions`); each is described in the prompt and adds to the grammar.")
    embedding_max_inputs: int = Field(2048, ge=1, description="Most inputs in one `/v1/embeddings` request (OpenAI's bound too); each input's length is bounded by the worker's `EMBEDDING_MAX_TOKENS`.")
    # Secrets and the network.
    login_max_failures: int = Field(5, ge=1, description="Failed ui sign-ins allowed per user name and per address within `LOGIN_LOCKOUT_S`; then 429 with Retry-After.")
    session_ttl_s: int = Field(7 * 86400, ge=60, description="How long a ui sign-in (session token) lasts.")
    login_lockout_s: int = Field(300, ge=1, description="Window over which failed sign-ins are counted, and how long a locked sign-in waits.")
    metrics_token: str = Field("", description="Bearer token that lets a scraper see `/metrics` per user (an admin's key does too); empty: admins only.")
    cors_origins: str = Field("", description="Comma-separated browser origins allowed to call the api (CORS); empty: none.")

    @field_validator("model_aliases")
    @classmethod
    def _aliases_parse(cls, value: str) -> str:
        parse_aliases(value)
        return value

    @property
    def aliases(self) -> dict[str, str]:
        return parse_aliases(self.model_aliases)


def parse_aliases(text: str) -> dict[str, str]:
    """`a=m1, b=m2` -> {"a": "m1", "b": "m2"}."""
    aliases: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        alias, eq, model = (part.strip() for part in entry.partition("="))
        if not (eq and alias and model):
            raise ValueError(f"an alias is `alias=model`, got {entry!r}")
        aliases[alias] = model
    return aliases
