"""The GGUF files a worker serves, as read from their metadata at start: each model's id,
context window and what loading it costs in memory (which `worker.pool` budgets by)."""

from dataclasses import dataclass
from pathlib import Path

from llama_cpp import Llama
from llama_cpp._utils import suppress_stdout_stderr

from worker.settings import N_CTX_CAP, WorkerSettings
from worker.state_file import model_identity

KV_BYTES = 2  # llama.cpp's default KV cache type is f16


def load_vocab(path: str) -> Llama:
    """The model's tokenizer and metadata only: milliseconds and a few MB."""
    with suppress_stdout_stderr(disable=False):  # llama.cpp warns that a vocab has no context
        return Llama(model_path=path, vocab_only=True, verbose=False)


@dataclass(frozen=True)
class ModelFile:
    id: str  # the name requests route by
    path: Path
    n_ctx: int  # the window it is loaded with
    cost_bytes: int  # estimated memory once loaded: weights + KV cache
    vocab: Llama  # tokenizer and metadata (vocab-only): counts prompts without loading the weights
    identity: bytes  # the file's (worker.state_file): saved states are only restored into the file that made them

    @classmethod
    def read(cls, path: Path, model_id: str, n_ctx: int) -> "ModelFile":
        if not path.is_file():
            raise FileNotFoundError(f"model file {str(path)!r} is not a file")
        vocab = load_vocab(str(path))
        meta = vocab.metadata
        arch = meta.get("general.architecture", "")
        window = n_ctx or min(int(meta.get(f"{arch}.context_length", N_CTX_CAP)), N_CTX_CAP)
        return cls(model_id or path.name.removesuffix(".gguf"), path, window,
                   path.stat().st_size + kv_bytes(meta, window), vocab, model_identity(path))


def kv_bytes(meta: dict[str, str], n_ctx: int) -> int:
    """The KV cache of `n_ctx` tokens: per layer, a key and a value per KV head per token
    (grouped-query attention shares KV heads: Mistral 7B has 8 for 32 query heads)."""
    arch = meta.get("general.architecture", "")

    def get(key: str, default: int) -> int:
        return int(meta.get(f"{arch}.{key}", default))

    layers, embedding = get("block_count", 0), get("embedding_length", 0)
    heads = max(get("attention.head_count", 1), 1)
    kv_heads = get("attention.head_count_kv", heads)
    key_len, value_len = get("attention.key_length", embedding // heads), get("attention.value_length", embedding // heads)
    return n_ctx * layers * kv_heads * (key_len + value_len) * KV_BYTES


def catalog(settings: WorkerSettings) -> dict[str, ModelFile]:
    """Every model the settings name, by id; ids must differ, as requests route by them."""
    paths = settings.model_paths()
    if not paths:
        raise ValueError(f"MODELS {settings.models!r} names no GGUF file")
    files: dict[str, ModelFile] = {}
    for path in paths:
        model = ModelFile.read(path, settings.model_name, settings.n_ctx)
        if model.id in files:
            raise ValueError(f"two model files are named {model.id!r}: {files[model.id].path} and {path}")
        files[model.id] = model
    return files
