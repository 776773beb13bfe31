"""Cut holes into source files: the rest of a random line after a random point in it."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from model_runtime.context import language_for_path
from model_runtime.evaluation.task import FimTask


@dataclass(frozen=True)
class SourceFile:
    path: str
    text: str


def line_starts(text: str) -> list[int]:
    """The offset where each line of `text` begins."""
    starts = [0]
    starts.extend(i + 1 for i, char in enumerate(text) if char == "\n")
    return starts


def holeable_lines(text: str) -> list[int]:
    """Indices of the lines that hold more than blank space."""
    return [i for i, line in enumerate(text.split("\n")) if line.strip()]


def cut_range(line: str) -> range:
    """Cut points after the indentation that leave at least one character to predict."""
    body = line.rstrip()
    return range(len(body) - len(body.lstrip()), len(body))


def cut_line(file: SourceFile, index: int, cut: int) -> FimTask:
    """The task whose hole is line `index` of `file` from column `cut` to its last non-blank."""
    start = line_starts(file.text)[index]
    body = file.text.split("\n")[index].rstrip()
    return FimTask(
        task_id=f"{file.path}:{index + 1}:{cut}",
        prefix=file.text[: start + cut],
        suffix=file.text[start + len(body) :],
        reference=body[cut:],
        path=file.path,
        language=language_for_path(file.path),
    )


def cut_holes(files: Sequence[SourceFile], count: int, seed: int) -> list[FimTask]:
    """Up to `count` holes, each in a distinct line: a random file, then a random line in it."""
    rng = random.Random(seed)
    queues = [
        (f, rng.sample(lines, len(lines))) for f in files if (lines := holeable_lines(f.text))
    ]
    tasks: list[FimTask] = []
    while queues and len(tasks) < count:
        pick = rng.randrange(len(queues))
        file, queue = queues[pick]
        index = queue.pop()
        if not queue:
            queues.pop(pick)
        cut = rng.choice(cut_range(file.text.split("\n")[index]))
        tasks.append(cut_line(file, index, cut))
    return tasks
