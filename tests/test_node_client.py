"""Microsoft's reference protocol libraries as the client: tests/node_client/client.mjs runs
initialize -> didOpen -> inlineCompletion -> didChange -> cancel -> accept -> wisp/stats ->
shutdown against `wisp serve`, checking each answer against the protocol's types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from node_packages import NODE, NPM, npm_ci

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not on PATH"),
]
CLIENT = Path(__file__).resolve().parent / "node_client"
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def installed() -> Path:
    seconds = npm_ci(CLIENT)
    if seconds is not None:
        print(f"npm ci in {CLIENT.name}: {seconds:.1f} s")
    return CLIENT


def test_client_typechecks_against_the_protocol_declarations(installed: Path) -> None:
    assert NPM is not None
    done = subprocess.run(
        [NPM, "run", "--silent", "typecheck"], cwd=installed, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_reference_client_session(installed: Path, x_model: Path) -> None:
    assert NODE is not None
    env = {**os.environ, "WISP_PYTHON": sys.executable, "WISP_MODEL": str(x_model)}
    done = subprocess.run(
        [NODE, str(installed / "client.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    context = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout)
    assert report["failures"] == [], context
    assert done.returncode == 0, context
    passed = [step["step"] for step in report["steps"] if step["ok"]]
    for expected in (
        "initialize: executeCommandProvider",
        "inlineCompletion: a valid InlineCompletionList",
        "inlineCompletion after didChange",
        "cancel: the server answers RequestCancelled",
        "executeCommand wisp.didAccept answers null",
        "wisp/stats: counts",
        "server exits with 0",
    ):
        assert expected in passed, context
