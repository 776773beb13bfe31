"""The model that ships in the package: present, small, offline, and answering end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lsp_session import start, stop
from lsprotocol import types

from model_runtime.model_source import BUNDLED_MODEL_DIR, bundled_model, resolve_model

CODE = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        return \n"


def test_bundled_model_is_the_default() -> None:
    assert bundled_model() == BUNDLED_MODEL_DIR
    assert resolve_model(None) == str(BUNDLED_MODEL_DIR)


def test_bundled_model_fits_the_budget_and_has_a_card() -> None:
    files = {p.name: p.stat().st_size for p in BUNDLED_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(
        files
    )
    assert sum(files.values()) <= 40 * 1024 * 1024
    card = (BUNDLED_MODEL_DIR / "README.md").read_text(encoding="utf-8")
    for needed in ("wisp train", "Python Software Foundation", "validation loss", "pass@1"):
        assert needed in card
    config = json.loads((BUNDLED_MODEL_DIR / "config.json").read_text())
    assert config["fim_template"] == "wisp"


@pytest.mark.slow
def test_complete_offline_with_no_cache(tmp_path: Path) -> None:
    source = tmp_path / "files.py"
    source.write_text(CODE)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "empty-hf-home"),  # nothing cached: the package alone
    }
    argv = ["complete", str(source), "--line", "5", "--character", "15", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "lsp_server.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert isinstance(out["items"], list)
    assert all("\n" not in item["text"] for item in out["items"])  # mid-statement: one line
    assert out["timings_ms"]["steps"] >= 1  # the bundled model really ran


@pytest.mark.slow
async def test_server_serves_the_bundled_model_by_default() -> None:
    session, _ = await start({})
    status = await session.wait_state("ready", "error")
    assert status["state"] == "ready", status
    assert "bundled_model" in status["message"]
    uri = "file:///work/files.py"
    session.open(uri, CODE)
    inline = await session.inline(uri, 5, 15)
    assert all(item.insert_text.strip() for item in inline.items)
    menu = await session.client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=5, character=15),
        )
    )
    assert isinstance(menu, types.CompletionList) and menu.is_incomplete
    await stop(session)
