"""Loaders that turn benchmark files and source trees into FimTasks.

Each loader places the cursor where an editor would have it, so that
`prefix + reference + suffix` is the benchmark's original program.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from model_runtime.context import MultilineMode
from model_runtime.evaluation.holes import HoleKind, SourceFile, cut_holes
from model_runtime.evaluation.task import FimTask

DATASETS = ("humaneval-infilling", "santacoder-fim", "repo")
SANTACODER_LANGUAGES = {"py": "python", "java": "java", "js": "javascript"}
DEFAULT_REPO_HOLES = 100


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a .jsonl or .jsonl.gz file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())


def humaneval_mode(task_id: str) -> MultilineMode:
    """One line for single-line infilling, a block for multi-line, the editor's rule for spans."""
    if task_id.startswith("SingleLine"):
        return "never"
    return "always" if task_id.startswith("MultiLine") else "auto"


def humaneval_task(record: Mapping[str, str]) -> FimTask:
    """The middle's trailing line break moves into the suffix: the cursor is on its own line.

    Single- and multi-line middles are whole lines with their indentation and line break, so
    the cursor sits at column 0 of an empty line, and one line typed there completes it.
    """
    middle, suffix = record["canonical_solution"], record["suffix"]
    if middle.endswith("\n"):
        middle, suffix = middle[:-1], "\n" + suffix
    return FimTask(
        task_id=record["task_id"],
        prefix=record["prompt"],
        suffix=suffix,
        reference=middle,
        path="main.py",
        language="python",
        extra={"test": record["test"], "entry_point": record["entry_point"]},
        multiline=humaneval_mode(record["task_id"]),
    )


def santacoder_task(record: Mapping[str, str]) -> FimTask:
    """The records split the source at the middle line and drop the two line breaks around it.

    The cursor goes to column 0 of that line, left empty, between the restored line breaks.
    """
    ext = record["language"]
    return FimTask(
        task_id=record["name"],
        prefix=record["prompt"] + "\n",
        suffix="\n" + record["suffix"],
        reference=record["canonical_solution"],
        path=f"main.{ext}",
        language=SANTACODER_LANGUAGES.get(ext, ext),
    )


def humaneval_tasks(path: Path, limit: int | None) -> list[FimTask]:
    return [humaneval_task(r) for r in islice(read_jsonl(path), limit)]


def santacoder_tasks(path: Path, limit: int | None, language: str | None) -> list[FimTask]:
    records = (r for r in read_jsonl(path) if language in (None, r["language"]))
    return [santacoder_task(r) for r in islice(records, limit)]


def read_tree(root: Path, ext: str) -> list[SourceFile]:
    """Every UTF-8 `*.ext` file under `root`, by relative path, in path order."""
    files = []
    for path in sorted(root.rglob(f"*.{ext.lstrip('.')}")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        files.append(SourceFile(path.relative_to(root).as_posix(), text))
    return files


def repo_tasks(
    root: Path, limit: int | None, seed: int, ext: str, holes: HoleKind = "random"
) -> list[FimTask]:
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    return cut_holes(read_tree(root, ext), limit or DEFAULT_REPO_HOLES, seed, holes)


def load_tasks(
    dataset: str,
    path: Path,
    limit: int | None = None,
    language: str | None = None,
    seed: int = 0,
    ext: str = "py",
    holes: HoleKind = "random",
) -> list[FimTask]:
    """The first `limit` tasks of a dataset (for `repo`: `limit` holes of kind `holes`, 100 by
    default)."""
    if dataset == "humaneval-infilling":
        return humaneval_tasks(path, limit)
    if dataset == "santacoder-fim":
        return santacoder_tasks(path, limit, language)
    if dataset == "repo":
        return repo_tasks(path, limit, seed, ext, holes)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
