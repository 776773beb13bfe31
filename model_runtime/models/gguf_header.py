"""GGUF headers read without torch: the metadata and where each tensor lies in the file.

The layout is GGUF versions 2 and 3: a header, the key/value metadata, the tensor descriptions,
then the aligned tensor data. `local.gguf_file` maps the data for the kernels; `listing` only
needs the header.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from model_runtime.backend import ModelLoadError
from model_runtime.models.stores import pick_gguf

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_SAMPLE_BYTES = 1 << 20

# Metadata value types: number -> struct format (strings, arrays and bools apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY, _BOOL = 8, 9, 7


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's blocks lie in the file, and their shape in torch's order."""

    name: str
    type: int
    shape: tuple[int, ...]  # [rows, columns] for a matrix: the file lists them innermost first
    offset: int  # from the start of the file
    nbytes: int

    @property
    def type_name(self) -> str:
        try:
            return GGMLQuantizationType(self.type).name
        except ValueError:
            return f"type {self.type}"


def check_header(path: Path) -> None:
    """Raise ModelLoadError unless `path` starts like a GGUF file of a version we read."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    (version,) = struct.unpack("<I", head[4:])
    if version not in (2, 3):
        raise ModelLoadError(f"{path} is GGUF version {version}; versions 2 and 3 are read")


def find_gguf(source: Path) -> Path | None:
    """The GGUF file `source` names: the file itself, or the model file a folder without config
    holds (ModelLoadError where it holds several: which one is for the user to say)."""
    if source.is_file():  # by its first bytes: an Ollama blob has no suffix
        return source if source.suffix.lower() == ".gguf" or _is_gguf(source) else None
    if not source.is_dir() or (source / "config.json").is_file():
        return None
    return pick_gguf(source, "", str(source)) if any(source.glob("*.gguf")) else None


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def read_header(
    data: mmap.mmap, path: Path, skip: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
    """The metadata and the tensors' places; ModelLoadError for a file that is not GGUF or is
    cut short. Values of the keys in `skip` (large arrays nobody asked for) are left out."""
    try:
        return _read_header(data, path, skip)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the GGUF file {path}: {exc}") from exc


def _read_header(
    data: mmap.mmap, path: Path, skip: frozenset[str]
) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
    reader = _Reader(data)
    if reader.take(4) != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    version = reader.scalar("<I")
    if version not in (2, 3):
        raise ModelLoadError(f"{path} is GGUF version {version}; versions 2 and 3 are read")
    count, pairs = reader.scalar("<Q"), reader.scalar("<Q")
    metadata = {}
    for _ in range(pairs):
        key = reader.string()
        if key in skip:
            reader.skip(reader.scalar("<I"))
        else:
            metadata[key] = reader.value(reader.scalar("<I"))
    infos = []
    for _ in range(count):
        name = reader.string()
        dims = [reader.scalar("<Q") for _ in range(reader.scalar("<I"))]
        kind, offset = reader.scalar("<I"), reader.scalar("<Q")
        infos.append((name, dims, kind, offset))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    start = -(-reader.at // alignment) * alignment
    tensors = {}
    for name, dims, kind, offset in infos:
        block, size = GGML_QUANT_SIZES.get(kind, (1, 0))  # an unknown type: refused by the kernels
        weights = int(np.prod(dims)) if dims else 1
        shape = tuple(reversed(dims))
        tensors[name] = TensorInfo(name, kind, shape, start + offset, weights // block * size)
    return metadata, tensors


class _Reader:
    """Little-endian values from the mapped file, one after another."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise ValueError("the header ends early")
        piece = self.data[self.at : self.at + size]
        self.at += size
        return piece

    def scalar(self, form: str) -> Any:
        value = struct.unpack_from(form, self.data, self.at)[0]
        self.at += struct.calcsize(form)
        return value

    def string(self) -> str:
        return self.take(self.scalar("<Q")).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar("<" + _SCALARS[kind])
        if kind == _BOOL:
            return bool(self.scalar("<B"))
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ValueError(f"unknown metadata type {kind}")
        item, count = self.scalar("<I"), self.scalar("<Q")
        if item in _SCALARS:  # numbers in one piece
            form = np.dtype("<" + _SCALARS[item])
            return np.frombuffer(self.take(count * form.itemsize), dtype=form).tolist()
        if item == _STRING:  # vocabularies: a tight loop
            return self._strings(count)
        return [self.value(item) for _ in range(count)]

    def skip(self, kind: int) -> None:
        """Step over one value without decoding it."""
        if kind != _ARRAY:
            self.value(kind)
            return
        item, count = self.scalar("<I"), self.scalar("<Q")
        if item in _SCALARS:
            self.take(count * struct.calcsize("<" + _SCALARS[item]))
        elif item == _STRING:
            data, at, unpack = self.data, self.at, struct.unpack_from
            for _ in range(count):
                at += 8 + unpack("<Q", data, at)[0]
            if at > len(data):
                raise ValueError("the header ends early")
            self.at = at
        else:
            for _ in range(count):
                self.skip(item)

    def _strings(self, count: int) -> list[str]:
        data, at, unpack, out = self.data, self.at, struct.unpack_from, []
        for _ in range(count):
            (size,) = unpack("<Q", data, at)
            out.append(data[at + 8 : at + 8 + size].decode("utf-8", errors="replace"))
            at += 8 + size
        if at > len(data):
            raise ValueError("the header ends early")
        self.at = at
        return out


def file_identity(path: Path) -> str:
    """A short hash of the file's size and its first and last megabyte: what is built once
    from a file (its tokenizer) is kept under this name."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(_SAMPLE_BYTES))
        handle.seek(max(0, size - _SAMPLE_BYTES))
        digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:16]
