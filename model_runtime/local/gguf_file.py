"""GGUF files read in place: the metadata parsed, the tensors' blocks mapped from the file.

Nothing is converted or copied: a tensor is a byte view of the mapped file, handed to the
kernels as it is stored (see `blocks`). Pages are read from disk as the kernels first touch
them and stay shared with the page cache. The header is read by `models.gguf_header`.
"""

from __future__ import annotations

import mmap
import struct
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from model_runtime.backend import ModelLoadError
from model_runtime.models.gguf_header import read_header


class GgufFile:
    """One GGUF file: `metadata`, `tensors` (by name) and `blocks(name)`, a byte view."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as handle:
                # A private mapping: tensors are views torch may treat as writable; nothing
                # writes to them, so every page stays the page cache's own.
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
            self.metadata, self.tensors = read_header(self._map, path)
        except (OSError, struct.error, UnicodeDecodeError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the GGUF file {path}: {exc}") from exc
        for info in self.tensors.values():
            if info.offset + info.nbytes > len(self._map):
                raise ModelLoadError(
                    f"{path} is cut short: tensor {info.name} ends past the end of the file"
                )

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "?"))

    def get(self, key: str, default: Any = None) -> Any:
        """The metadata value of `{architecture}.{key}`."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def blocks(self, name: str) -> torch.Tensor:
        """The stored bytes of tensor `name`, mapped from the file (uint8, not copied)."""
        info = self.tensors[name]
        return self._bytes[info.offset : info.offset + info.nbytes]

    @cached_property
    def _bytes(self) -> torch.Tensor:
        return torch.frombuffer(self._map, dtype=torch.uint8)

    @property
    def nbytes(self) -> int:
        return len(self._map)
