"""Run a test program in a fresh Python process; never in this one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model_runtime.evaluation.task import FimTask

Outcome = Literal["passed", "failed", "timeout"]


@dataclass(frozen=True)
class Execution:
    outcome: Outcome
    stderr_tail: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


def program_for(task: FimTask, document: str) -> str | None:
    """The completed document followed by its tests and their call; None for untested tasks."""
    test, entry_point = task.extra.get("test"), task.extra.get("entry_point")
    if test is None or entry_point is None:
        return None
    return f"{document}\n{test}\ncheck({entry_point})\n"


def run_python(source: str, timeout_s: float) -> Execution:
    """Run `source` isolated (`python -I`) in a scratch folder; it passes iff it exits with 0."""
    with tempfile.TemporaryDirectory(prefix="wisp-eval-") as scratch:
        program = Path(scratch) / "program.py"
        program.write_text(source, encoding="utf-8")
        with subprocess.Popen(
            [sys.executable, "-I", str(program)],
            cwd=scratch,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a group of its own: the kill below ends its children too
        ) as proc:
            try:
                _, stderr = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return Execution("timeout")
            finally:
                # Ctrl-C does not reach a new session: end it on every way out, errors included.
                if proc.returncode is None:
                    _kill_group(proc.pid)
    outcome: Outcome = "passed" if proc.returncode == 0 else "failed"
    return Execution(outcome, stderr.decode("utf-8", "replace")[-500:])


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
