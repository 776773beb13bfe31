"""Leaving cleanly: `exit` while the model is busy, before it is loaded, and without `shutdown`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from raw_client import RawClient

pytestmark = pytest.mark.slow

# Long enough that the prompt's prefill (one uninterruptible torch call) takes a second or more.
LONG_DOCUMENT = "".join(f"def f{i}(a, b):\n    return a * {i} + b\n" for i in range(700))
LONG_DOCUMENT += "def g(x):\n    "
LAST_LINE = LONG_DOCUMENT.count("\n")


def _ask(client: RawClient) -> int:
    return client.request(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": "file:///a.py"},
            "position": {"line": LAST_LINE, "character": 4},
            "context": {"triggerKind": 1},
        },
    )


@pytest.mark.parametrize("cancel_first", [True, False])
def test_exit_while_a_completion_is_computing_is_clean(tmp_path: Path, cancel_first: bool) -> None:
    """Before the fix: SIGABRT ("terminate called without an active exception") every time."""
    stderr = tmp_path / "stderr.txt"
    client = RawClient(stderr_path=stderr)
    try:
        client.initialize()
        assert client.wait_status("ready", "error")["state"] == "ready"
        client.open("file:///a.py", LONG_DOCUMENT)
        request = _ask(client)
        time.sleep(0.5)  # inside the prefill
        if cancel_first:
            client.notify("$/cancelRequest", {"id": request})
            time.sleep(0.05)
        started = time.monotonic()
        code = client.finish()
        waited = time.monotonic() - started
    finally:
        client.close()
    log = stderr.read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert "terminate called" not in log
    assert "return a * 699" not in log  # no document text at the default log level
    assert waited < 10, f"exit took {waited:.1f} s"


def test_exit_while_the_model_loads_is_clean(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr.txt"
    client = RawClient(stderr_path=stderr)
    try:
        client.initialize()
        client.wait_status("loading")
        code = client.finish()
    finally:
        client.close()
    assert code == 0, stderr.read_text(errors="replace")[-3000:]


def test_exit_without_shutdown_or_a_closed_pipe_is_code_1(tmp_path: Path) -> None:
    """LSP: `exit` without a `shutdown` before it ends the server with 1; so does a lost client."""
    without_shutdown = RawClient()
    without_shutdown.initialize()
    without_shutdown.notify("exit")
    assert without_shutdown.wait() == 1

    lost = RawClient()
    lost.initialize()
    assert lost.process.stdin is not None
    lost.process.stdin.close()
    assert lost.wait() == 1
