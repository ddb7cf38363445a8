"""One saved model state on disk: Hearth's own small binary format (never pickle).

    header  magic, format version, model identity, engine tag, token count, routes' length,
            data length, data checksum, header checksum (over the header, tokens and routes)
    tokens  the sequence the state holds, int32 little-endian
    routes  the route keys it serves (worker.route_keys), UTF-8, one a line
    data    llama.cpp's sequence state (`llama_state_seq_get_data`)

The header, tokens and routes are read alone (a folder is indexed without reading the states); the
data's checksum is checked before any of it reaches llama.cpp. A file that is truncated,
half-written, of another format version, another model or another llama.cpp, or whose bytes
changed, reads as `Unusable`: its caller removes it.
"""

import hashlib
import os
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np

MAGIC = b"HEARTHST"
VERSION = 2  # 2: the routes
_HEADER = struct.Struct("<8sHH32s32sIIQII")  # magic, version, flags, model, engine, n_tokens, routes_len, data_len, data_crc, head_crc
SUFFIX = ".state"
TMP_SUFFIX = ".tmp"
_SAMPLE = 1 << 20  # bytes of a model file hashed at each end

# What must match besides the model for a state to load: llama.cpp's sequence-state layout.
ENGINE_TAG = hashlib.sha256(f"llama-cpp-python {llama_cpp.__version__} seq-state {llama_cpp.LLAMA_STATE_SEQ_VERSION}".encode()).digest()


class Unusable(Exception):
    """The file cannot be trusted to hold the state it names."""


def model_identity(path: Path) -> bytes:
    """The GGUF file's identity: its size, its first MiB (header and metadata) and its last
    (weights). Two files that differ in any of these are different models, whatever their
    names; reading 2 MiB costs milliseconds, where hashing 5 GB of weights would cost seconds."""
    size = path.stat().st_size
    digest = hashlib.sha256(size.to_bytes(8, "little"))
    with path.open("rb") as f:
        digest.update(f.read(_SAMPLE))
        f.seek(max(size - _SAMPLE, 0))
        digest.update(f.read(_SAMPLE))
    return digest.digest()


def file_name(model: bytes, tokens: np.ndarray) -> str:
    """One name per (model, sequence): the same state saved twice replaces itself."""
    key = hashlib.sha256(model + tokens.astype("<i4").tobytes()).hexdigest()[:40]
    return f"{model.hex()[:16]}-{key}{SUFFIX}"


@dataclass(frozen=True)
class Header:
    model: bytes
    tokens: np.ndarray  # int32
    routes: frozenset[str]
    routes_len: int
    data_len: int
    data_crc: int

    @property
    def data_offset(self) -> int:
        return _HEADER.size + 4 * len(self.tokens) + self.routes_len

    @property
    def file_size(self) -> int:
        return self.data_offset + self.data_len


def write(folder: Path, model: bytes, tokens: np.ndarray, routes: frozenset[str], data: bytes) -> Path:
    """Write atomically: a reader sees the whole file under its name, or no file (a crash
    leaves a `.tmp`, which no reader takes for a state)."""
    raw_tokens = tokens.astype("<i4").tobytes()
    raw_routes = "\n".join(sorted(routes)).encode()
    head = _HEADER.pack(MAGIC, VERSION, 0, model, ENGINE_TAG, len(tokens), len(raw_routes), len(data), zlib.crc32(data), 0)[:-4]
    head += struct.pack("<I", zlib.crc32(raw_routes, zlib.crc32(raw_tokens, zlib.crc32(head))))
    path = folder / file_name(model, tokens)
    tmp = folder / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        with tmp.open("wb") as f:
            f.write(head)
            f.write(raw_tokens)
            f.write(raw_routes)
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_header(path: Path) -> Header:
    """The header, tokens and routes, checked; the data is not read."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                raise Unusable("truncated header")
            magic, version, _flags, model, engine, n_tokens, routes_len, data_len, data_crc, head_crc = _HEADER.unpack(head)
            if magic != MAGIC:
                raise Unusable("not a state file")
            if version != VERSION:
                raise Unusable(f"format version {version}")
            raw_tokens = f.read(4 * n_tokens)
            raw_routes = f.read(routes_len)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise Unusable(f"unreadable: {exc.strerror}") from exc
    if zlib.crc32(raw_routes, zlib.crc32(raw_tokens, zlib.crc32(head[:-4]))) != head_crc:
        raise Unusable("header checksum")
    if engine != ENGINE_TAG:
        raise Unusable("made by another llama.cpp")
    routes = frozenset(raw_routes.decode().split("\n")) - {""}
    header = Header(model, np.frombuffer(raw_tokens, dtype="<i4").astype(np.int32), routes, routes_len, data_len, data_crc)
    if size != header.file_size:
        raise Unusable(f"size {size}, expected {header.file_size}")
    return header


def read(path: Path, model: bytes) -> tuple[Header, bytes]:
    """The header and the state data of `model`, checked end to end."""
    header = read_header(path)
    if header.model != model:
        raise Unusable("another model's state")
    try:
        with path.open("rb") as f:
            f.seek(header.data_offset)
            data = f.read(header.data_len + 1)
    except OSError as exc:
        raise Unusable(f"unreadable: {exc.strerror}") from exc
    if len(data) != header.data_len or zlib.crc32(data) != header.data_crc:
        raise Unusable("data checksum")
    return header, data
