"""Large blocks kept out of the C allocator's heaps, so that memory freed goes back to the system.

glibc serves allocations under its mmap threshold from its heaps, and each time a larger block
is freed it raises that threshold, up to 32 MB. Import-time buffers, weights being packed and
the key/value caches (6-30 MB each on the bundled model, freed when they grow or their document
closes) then land in the heaps, and the space they leave is not given back. Held at 4 MB, blocks
at least that large get mappings of their own, returned to the kernel when freed. Peak RSS of the
typing replay on the 2-core AMD EPYC: 725-856 MB before; 682-694 MB held from the model load
only, 632-678 MB held from the process's start as `wisp serve` does.

No torch here: the server calls it before anything large is imported.
"""

from __future__ import annotations

import ctypes
import os

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BLOCK = 4 << 20


def map_large_blocks(size: int = LARGE_BLOCK) -> bool:
    """Serve allocations of `size` bytes and more from mappings of their own, for the whole
    process (glibc's `mallopt`); False where the C library has no such setting."""
    if os.name != "posix":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl, macOS
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, size) == 1)
