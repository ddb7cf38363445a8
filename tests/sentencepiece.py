"""A small SentencePiece vocabulary as llama.cpp reads Mistral 7B's, for shaped models
(tools/shaped_gguf.py --tokenizer-from): Mistral's own tokenizer is not on this machine."""

import string
from collections.abc import Sequence
from pathlib import Path

import gguf

WORDS = ("Hello", "there", "INST", "Be", "brief", "Hi", "How", "can", "help", "two", "spaces", "list", "json", "name", "arguments", "[/")


def sentencepiece_vocab(out: Path, controls: Sequence[str] = (), extra: Sequence[str] = ()) -> Path:
    """Control tokens (`<s>`, `</s>`, then `controls`: Mistral v0.3 has `[INST]`,
    `[TOOL_CALLS]`... at 3 and on), byte fallback, and pieces scored longest first, with whole
    words such as `▁Hello` (and `extra` pieces). Its tokenizer puts a space before every text
    it is given."""
    pieces = {*string.ascii_letters, *string.digits, *string.punctuation, "▁", *extra}
    for word in WORDS:
        pieces.update(piece[:i] for piece in (word, "▁" + word) for i in range(1, len(piece) + 1))
    kinds = gguf.TokenType
    vocab = [("<unk>", kinds.UNKNOWN), ("<s>", kinds.CONTROL), ("</s>", kinds.CONTROL), *((c, kinds.CONTROL) for c in controls),
             *((f"<0x{b:02X}>", kinds.BYTE) for b in range(256)), *((piece, kinds.NORMAL) for piece in sorted(pieces))]
    writer = gguf.GGUFWriter(out, "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_scores([-1000.0 / len(token) if kind == kinds.NORMAL else 0.0 for token, kind in vocab])
    writer.add_token_types([kind for _, kind in vocab])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return out
