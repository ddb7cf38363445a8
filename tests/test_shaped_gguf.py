"""tools/shaped_gguf.py: the random-weight Mistral the tests and the bench serve."""

from pathlib import Path

import gguf
import pytest
from llama_cpp import Llama

from tools.shaped_gguf import (
    MISTRAL_INSTRUCT_TEMPLATE,
    PRESETS,
    TEMPLATE_FILES,
    Q,
    TemplateName,
    cached_shaped_gguf,
    main,
    tensors,
)
from worker.models import load_vocab
from worker.prompter import Prompter
from worker.settings import embedded_model_path

SMOLLM2_VOCAB = 49152


def test_tiny_model_loads_and_generates(mistral_tiny: str) -> None:
    llama = Llama(model_path=mistral_tiny, n_ctx=256, n_threads=1, seed=1, verbose=False)
    out = llama.create_completion("[INST] Hello [/INST]", max_tokens=4, temperature=0, logit_bias={llama.token_eos(): -100})
    assert out["usage"]["completion_tokens"] == 4
    meta = llama.metadata
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.chat_template"] == MISTRAL_INSTRUCT_TEMPLATE
    assert int(meta["llama.attention.head_count_kv"]) < int(meta["llama.attention.head_count"])  # grouped-query, as Mistral


def test_tiny_model_rejects_a_system_role_as_the_real_one_does(mistral_tiny: str) -> None:
    template = Prompter(load_vocab(mistral_tiny), n_ctx=4096, default_max_tokens=64).template
    assert template.folds_system and template.merges_turns and template.needs_user_first
    assert template.turn_markers == ["[INST]"]


def test_tokenizer_is_smollm2s(mistral_tiny: str) -> None:
    shaped, smol = load_vocab(mistral_tiny), load_vocab(embedded_model_path())
    text = b"Hearth keeps the family's chats at home."
    assert shaped.n_vocab() == smol.n_vocab() == SMOLLM2_VOCAB
    assert shaped.tokenize(text, add_bos=False) == smol.tokenize(text, add_bos=False)


def test_7b_preset_has_mistral_7b_shapes_and_a_q5_k_s_size() -> None:
    """Checked on the tensor list, without writing 5 GB."""
    shape = PRESETS["mistral-7b"]
    layout = list(tensors(shape, SMOLLM2_VOCAB, Q.Q5_K))
    assert sum(t.name.endswith("attn_q.weight") for t in layout) == 32
    assert {(t.n_rows, t.n_cols) for t in layout if t.name.endswith("attn_k.weight")} == {(1024, 4096)}
    assert {(t.n_rows, t.n_cols) for t in layout if t.name.endswith("ffn_down.weight")} == {(4096, 14336)}
    # 128 KiB of f16 KV cache per token, as the README says: layers x KV width x (K, V) x 2 bytes.
    assert shape.n_layer * shape.n_embd_kv * 2 * 2 == 128 * 1024
    gib = sum(t.n_rows * t.row_bytes for t in layout) / 2**30
    assert 4.5 < gib < 5.0  # TheBloke's Q5_K_S file is 4.65 GiB (its vocabulary is 32000, not 49152)


def test_cli_writes_the_file_and_the_cache_reuses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "tiny.gguf"
    assert main([str(out), "--preset", "mistral-tiny", "--qtype", "Q4_0"]) == 0
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert {t.tensor_type for t in reader.tensors if t.name.startswith("blk.0.") and "norm" not in t.name} == {Q.Q4_0}

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = cached_shaped_gguf("mistral-tiny")
    assert made == tmp_path / "cache" / "hearth" / "models" / "mistral-tiny-shaped.gguf"
    stamp = made.stat().st_mtime_ns
    assert cached_shaped_gguf("mistral-tiny") == made and made.stat().st_mtime_ns == stamp
    assert [p.name for p in made.parent.iterdir()] == [made.name]  # no partial file left behind


@pytest.mark.parametrize(("name", "fixture", "bos", "alternates"), [
    ("qwen2.5", "qwen_tiny", "false", False), ("llama3.1", "llama31_tiny", "true", False), ("mistral-v0.3", "mistral03_tiny", "true", True)])
def test_a_template_option_writes_that_models_template_and_bos(name: TemplateName, fixture: str, bos: str, alternates: bool,
                                                                request: pytest.FixtureRequest) -> None:
    """Qwen's tokenizer adds no BOS, Llama's and Mistral's do; Mistral v0.3's template wants
    alternating turns (tool turns aside) and takes a system prompt, as v0.2's does not."""
    vocab = load_vocab(request.getfixturevalue(fixture))
    assert vocab.metadata["tokenizer.chat_template"] == TEMPLATE_FILES[name][0].read_text()
    assert vocab.metadata["tokenizer.ggml.add_bos_token"] == bos
    template = Prompter(vocab, n_ctx=4096, default_max_tokens=64).template
    assert template.native_tools and not template.folds_system
    assert template.merges_turns == template.needs_user_first == alternates
