"""Node.js for the tests that use it: find node and npm, install a folder's locked packages."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

NODE = shutil.which("node")
NPM = shutil.which("npm")
INSTALL_TIMEOUT_S = 300


def npm_ci(folder: Path) -> float | None:
    """`npm ci` in `folder` unless its node_modules already match the lockfile.

    Returns the seconds the install took, or None when it was not needed. Failure raises with
    npm's output: a broken install must not look like a skipped test.
    """
    assert NPM is not None
    installed = folder / "node_modules" / ".package-lock.json"
    lock = folder / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return None
    started = time.perf_counter()
    done = subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert done.returncode == 0, f"npm ci in {folder} failed:\n{done.stdout}\n{done.stderr}"
    return time.perf_counter() - started
