"""The folder where wisp keeps what it builds once per machine: kernels, tokenizers."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$WISP_CACHE_DIR, else the XDG cache folder's `wisp`."""
    if explicit := os.environ.get("WISP_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "wisp"
