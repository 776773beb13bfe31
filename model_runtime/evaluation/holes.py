"""Cut holes into source files: the rest of a random line after a random point in it.

Cross-file holes are lines that use a name another file of the tree defines (and theirs does
not), cut at or before that name, so the answer needs it; single-file holes use no such name.
"""

from __future__ import annotations

import ast
import builtins
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from model_runtime.context import language_for_path
from model_runtime.crossfile.definitions import definitions
from model_runtime.crossfile.documents import OpenDocument
from model_runtime.evaluation.task import FimTask

HoleKind = Literal["random", "cross-file", "single-file"]
HOLE_KINDS: tuple[HoleKind, ...] = ("random", "cross-file", "single-file")


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


def bound_names(text: str) -> set[str]:
    """Every name a Python file binds anywhere: assigned, a parameter, a def or class name.

    Imports are not counted: an imported name is still defined in the other file."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def foreign_names(files: Sequence[SourceFile]) -> dict[str, frozenset[str]]:
    """Per file, the names other files define and it does not bind itself (builtins, dunders
    and short names left out). Imported names count as foreign: where they come from is the
    point."""
    defined = {
        f.path: {
            d.name
            for d in definitions(OpenDocument(f.path, f.text, language_for_path(f.path)))
            if len(d.name) > 2 and not d.name.startswith("__")
        }
        for f in files
    }
    everywhere: dict[str, int] = {}
    for names in defined.values():
        for name in names:
            everywhere[name] = everywhere.get(name, 0) + 1
    common = set(dir(builtins))
    return {
        f.path: frozenset(everywhere.keys() - defined[f.path] - bound_names(f.text) - common)
        for f in files
    }


def references(text: str) -> dict[int, list[tuple[int, str]]]:
    """Per zero-based line, the (column, name) of each name the code reads or imports there.

    Names in strings and comments are not references; a file that does not parse has none.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    lines = text.split("\n")
    found: dict[int, list[tuple[int, str]]] = {}

    def note(line: int, end_byte: int, name: str) -> None:
        end = len(lines[line - 1].encode("utf-8")[:end_byte].decode("utf-8", "ignore"))
        found.setdefault(line - 1, []).append((end - len(name), name))

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            note(node.lineno, node.col_offset + len(node.id.encode()), node.id)
        elif isinstance(node, ast.Attribute) and node.end_lineno == node.lineno:
            note(node.lineno, node.end_col_offset or 0, node.attr)
        elif isinstance(node, ast.alias) and node.asname is None and "." not in node.name:
            note(node.lineno, node.end_col_offset or 0, node.name)
    return found


def first_foreign(refs: list[tuple[int, str]], foreign: frozenset[str]) -> int | None:
    """The column where the first of `refs` (column, name) that is `foreign` starts."""
    return min((col for col, name in refs if name in foreign), default=None)


def hole_lines(file: SourceFile, kind: HoleKind, foreign: frozenset[str]) -> dict[int, range]:
    """The lines of `file` that can hold a hole of `kind`, each with its cut points."""
    lines = file.text.split("\n")
    refs = references(file.text) if kind != "random" else {}
    out = {}
    for index in holeable_lines(file.text):
        line = lines[index]
        if kind == "random":
            out[index] = cut_range(line)
            continue
        start = first_foreign(refs.get(index, []), foreign)
        indent = len(line) - len(line.lstrip())
        if kind == "single-file" and start is None and index in refs:
            out[index] = cut_range(line)
        elif kind == "cross-file" and start is not None and start >= indent:
            out[index] = range(indent, start + 1)
    return out


def cut_holes(
    files: Sequence[SourceFile], count: int, seed: int, kind: HoleKind = "random"
) -> list[FimTask]:
    """Up to `count` holes, each in a distinct line: a random file, then a random line in it."""
    rng = random.Random(seed)
    foreign: Mapping[str, frozenset[str]] = foreign_names(files) if kind != "random" else {}
    queues = []
    for f in files:
        if cuts := hole_lines(f, kind, foreign.get(f.path, frozenset())):
            queues.append((f, cuts, rng.sample(list(cuts), len(cuts))))
    tasks: list[FimTask] = []
    while queues and len(tasks) < count:
        pick = rng.randrange(len(queues))
        file, cuts, queue = queues[pick]
        index = queue.pop()
        if not queue:
            queues.pop(pick)
        tasks.append(cut_line(file, index, rng.choice(cuts[index])))
    return tasks
