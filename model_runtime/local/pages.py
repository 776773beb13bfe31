"""Letting go of weights' pages that are mapped from a file, once they have been packed.

transformers maps a safetensors file and the model's weights are views of that mapping: the
pages become resident when first read (by a probe, by packing) and stay counted in the process's
memory until the whole file is unmapped. `drop_file_pages` hands such pages back to the kernel
(`madvise(MADV_DONTNEED)`); reading them again maps them again from the file, so nothing is lost
as long as nothing wrote to them. Memory that is not a file mapping is never touched: there the
same call would zero the data.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
from collections.abc import Callable, Iterable
from functools import cache
from typing import Protocol

log = logging.getLogger(__name__)

_MADV_DONTNEED = 4
PAGE = mmap.PAGESIZE


class Buffer(Protocol):
    """What a torch tensor offers: where its bytes start and how many there are."""

    def data_ptr(self) -> int: ...

    @property
    def nbytes(self) -> int: ...


def file_mappings(maps: str = "/proc/self/maps") -> list[tuple[int, int]]:
    """Address ranges mapped from regular files (private or shared), from `maps`."""
    ranges = []
    try:
        with open(maps, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/") or fields[5].endswith("(deleted)"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        ranges.append((start, end))
    return ranges


def drop_file_pages(buffers: Iterable[Buffer]) -> int:
    """Hand back the whole pages of `buffers` that lie in file mappings; the bytes handed back.

    Only for buffers nobody wrote to since they were mapped: a written page would go back to
    what the file holds.
    """
    madvise = _madvise()
    if madvise is None:
        return 0
    ranges = file_mappings()
    dropped = 0
    for buffer in buffers:
        start = buffer.data_ptr()
        end = start + buffer.nbytes
        for low, high in ranges:
            first = -(-max(start, low) // PAGE) * PAGE
            last = min(end, high) // PAGE * PAGE
            if first < last and madvise(first, last - first, _MADV_DONTNEED) == 0:
                dropped += last - first
    return dropped


@cache
def _madvise() -> Callable[[int, int, int], int] | None:
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function
