"""Blocks of 4 MB and more get mappings of their own, given back when freed."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# After a 20 MB block is freed glibc raises its mmap threshold: a 6 MB tensor then comes from
# the heap, unless `map_large_blocks` held the threshold (main thread: its heap is "[heap]").
LARGE_BLOCK_PROBE = """
import ctypes, sys
import torch
from model_runtime.allocator import map_large_blocks
if sys.argv[1] == "held":
    assert map_large_blocks()
big = torch.empty(20 << 20, dtype=torch.uint8)
del big
kept = torch.empty(6 << 20, dtype=torch.uint8)
block = kept.data_ptr()
for line in open("/proc/self/maps"):
    fields = line.split()
    low, high = (int(x, 16) for x in fields[0].split("-"))
    if low <= block < high:
        print(fields[5] if len(fields) > 5 else "anonymous")
"""


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
def test_large_blocks_get_mappings_of_their_own_once_held() -> None:
    def region(mode: str) -> str:
        run = [sys.executable, "-c", LARGE_BLOCK_PROBE, mode]
        return subprocess.run(run, capture_output=True, text=True, check=True).stdout.split()[-1]

    assert region("default") == "[heap]"
    assert region("held") == "anonymous"
