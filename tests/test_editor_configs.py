"""The shipped Helix, Emacs, Zed and Sublime configs parse, start `wisp serve`, and carry only
settings the server accepts; where Emacs and eglot are installed, eglot completes through the
shipped wisp.el."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lsp_server.settings import parse_settings

CONFIGS = Path(__file__).resolve().parents[1] / "editor_configs"
EMACS_SCRIPT = Path(__file__).resolve().parent / "emacs" / "complete.el"


def jsonc(path: Path) -> Any:
    """JSON with whole-line `//` comments, as Zed and Sublime write their settings."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("//")]
    return json.loads("\n".join(lines))


def assert_valid_settings(raw: Any) -> None:
    assert raw, "a config should show where settings go"
    assert parse_settings(raw)[1] == []  # no warnings: every key known, every value valid


def test_helix() -> None:
    config = tomllib.loads((CONFIGS / "helix" / "languages.toml").read_text())
    server = config["language-server"]["wisp"]
    assert (server["command"], server["args"]) == ("wisp", ["serve"])
    assert_valid_settings(server["config"])
    assert config["language"] and all(
        "wisp" in lang["language-servers"] for lang in config["language"]
    )


def test_sublime() -> None:
    client = jsonc(CONFIGS / "sublime" / "LSP.sublime-settings")["clients"]["wisp"]
    assert client["command"] == ["wisp", "serve"] and client["enabled"] is True
    assert "source.python" in client["selector"]
    assert_valid_settings(client["initializationOptions"])


def test_zed() -> None:
    manifest = tomllib.loads((CONFIGS / "zed" / "extension.toml").read_text())
    assert "Python" in manifest["language_servers"]["wisp"]["languages"]
    cargo = tomllib.loads((CONFIGS / "zed" / "Cargo.toml").read_text())
    assert cargo["lib"]["crate-type"] == ["cdylib"]
    assert (CONFIGS / "zed" / cargo["lib"]["path"]).is_file()
    settings = jsonc(CONFIGS / "zed" / "settings.json")["lsp"]["wisp"]
    assert_valid_settings(settings["initialization_options"])


def _plist(text: str) -> dict[str, Any]:
    """`(:key value ...)` with string and integer values, as JSON."""
    pairs = re.findall(r':(\w+)\s+("(?:[^"\\]|\\.)*"|-?\d+)', text)
    return {key: json.loads(value) for key, value in pairs}


def test_emacs_settings() -> None:
    source = (CONFIGS / "emacs" / "wisp.el").read_text()
    found = re.search(r"\(defvar wisp-settings '\(([^)]*)\)", source)
    assert found is not None
    assert_valid_settings(_plist(found.group(1)))


EMACS = shutil.which("emacs")


def _has_eglot() -> bool:
    if EMACS is None:
        return False
    probe = "(progn (package-initialize) (require 'eglot))"
    done = subprocess.run([EMACS, "--batch", "-q", "--eval", probe], capture_output=True)
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _has_eglot(), reason="emacs with eglot (Debian: emacs-nox elpa-eglot)")
def test_emacs_eglot_completes_through_the_shipped_file(x_model: Path, tmp_path: Path) -> None:
    assert EMACS is not None
    source = tmp_path / "demo.py"
    source.write_text("value = \n")
    report_path = tmp_path / "report.json"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HOME": str(tmp_path),  # keep Emacs's state out of the real home
        "WISP_PYTHON": sys.executable,
        "WISP_MODEL": str(x_model),
        "WISP_EL": str(CONFIGS / "emacs" / "wisp.el"),
        "WISP_FILE": str(source),
        "WISP_OUT": str(report_path),
    }
    done = subprocess.run(
        [EMACS, "--batch", "-q", "-l", str(EMACS_SCRIPT)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    context = f"emacs exited {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    assert report_path.exists(), context
    report = json.loads(report_path.read_text())
    context = f"{json.dumps(report, indent=1)}\n{context}"
    assert "error" not in report, context
    assert (report["mode"], report["server_class"]) == ("python-mode", "wisp-eglot-server")
    assert "ready" in [status["state"] for status in report["statuses"]], context
    assert report["line"] == "value = xxxx", context  # completion-at-point applied the textEdit
    stats = report["stats"]
    assert (stats["requests"], list(stats["per_language"])) == (1, ["python"]), context
