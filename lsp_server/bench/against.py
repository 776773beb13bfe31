"""`wisp bench --against llama.cpp`: the same replay through llama.cpp's server, side by side.

The server is llama-cpp-python's (`python -m llama_cpp.server`), started on loopback on the
same GGUF file; wisp then talks to it as a remote backend (`backend: openai`), so both columns
go through the same editor-side pipeline and differ only in what runs the model.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lsp_server.bench.report import KINDS

LLAMA_PYTHON_ENV = "WISP_LLAMA_SERVER_PYTHON"
DEFAULT_LLAMA_PYTHON = Path.home() / ".cache" / "wisp-ci" / "llama-server" / "bin" / "python"
STARTUP_TIMEOUT_S = 180


class AgainstError(Exception):
    """The comparison cannot run; the message says what is missing."""


def llama_python(given: str | None) -> str:
    """The Python that has `llama_cpp.server`: the option, $WISP_LLAMA_SERVER_PYTHON, the CI
    cache's venv (.ci/install-llama-server), or this Python if it has llama_cpp."""
    candidates = [given, os.environ.get(LLAMA_PYTHON_ENV), str(DEFAULT_LLAMA_PYTHON)]
    for candidate in candidates:
        if candidate and (Path(candidate).is_file() or shutil.which(candidate)):
            return candidate
    try:
        import llama_cpp  # noqa: F401  # type: ignore[import-not-found]
    except ImportError:
        raise AgainstError(
            "no llama.cpp server found: pip install 'llama-cpp-python[server]' (a source build), "
            f"run .ci/install-llama-server, or name its Python with --llama-python or "
            f"${LLAMA_PYTHON_ENV}"
        ) from None
    return sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def llama_server(
    python: str,
    gguf: Path,
    threads: int,
    log: Path | None = None,
    port: int | None = None,
    extra: tuple[str, ...] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """llama.cpp's server on `gguf` at `port` (a free one by default) on loopback, up and
    answering: (its /v1 URL, the process). `extra` goes on its command line."""
    port = port or free_port()
    command = [python, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads)]
    command += ["--model_alias", gguf.stem, *extra]
    with open(log or os.devnull, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_up(port, process)
            yield f"http://127.0.0.1:{port}/v1", process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AgainstError(f"llama.cpp's server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, and wants an API key
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise AgainstError(f"llama.cpp's server did not come up in {STARTUP_TIMEOUT_S} s")


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory from /proc (Linux), None elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def remote_settings(raw: Mapping[str, Any], endpoint: str) -> dict[str, Any]:
    """The local run's settings, pointed at the server (greedy as locally: no repeat penalty)."""
    return {
        **raw,
        "backend": "openai",
        "endpoint": endpoint,
        "remoteOptions": {"repeat_penalty": 1.0, **dict(raw.get("remoteOptions") or {})},
    }


ROWS = ("p50_ms", "p95_ms")


def side_by_side(local: Mapping[str, Any], llama: Mapping[str, Any]) -> str:
    """One table: each kind's p50/p95 for wisp's runtime and for llama.cpp's server."""
    lines = [f"{'':<22}{'wisp local':>12}{'llama.cpp':>12}{'ratio':>8}"]
    for kind in KINDS:
        if kind not in local or kind not in llama:
            continue
        for row in ROWS:
            a, b = local[kind][row], llama[kind][row]
            lines.append(f"{kind + ' ' + row:<22}{_cell(a):>12}{_cell(b):>12}{_ratio(a, b):>8}")
    for key in ("ready_ms", "peak_rss_mb", "server_peak_rss_mb", "warm_p50_over_server_p50"):
        a, b = local.get(key), llama.get(key)
        lines.append(f"{key:<22}{_cell(a):>12}{_cell(b):>12}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def _ratio(a: Any, b: Any) -> str:
    return (
        f"{a / b:.2f}" if isinstance(a, int | float) and isinstance(b, int | float) and b else "-"
    )
