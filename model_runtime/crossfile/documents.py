"""What the editor holds besides the current document: open documents and recent edits."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

SnippetKind = Literal["definition", "edit", "similar"]


@dataclass(frozen=True)
class OpenDocument:
    """Another document open in the editor: its display path, text and language id."""

    path: str
    text: str
    language: str = ""


@dataclass(frozen=True)
class EditedRange:
    """A recent edit: the document's path and the zero-based line it touched."""

    path: str
    line: int


@dataclass(frozen=True)
class Snippet:
    """Lines of another document worth showing the model, and why."""

    path: str
    text: str
    kind: SnippetKind
    score: float = 0.0


class RecentEdits:
    """The last `size` edited places, newest first; edits within `merge_lines` of one merge."""

    def __init__(self, size: int = 16, merge_lines: int = 5) -> None:
        self.size, self.merge_lines = size, merge_lines
        self._ranges: list[EditedRange] = []

    def record(self, path: str, line: int) -> None:
        """Note an edit at `line` of `path`; it becomes the newest, replacing one close by."""
        self._ranges = [
            r for r in self._ranges if r.path != path or abs(r.line - line) > self.merge_lines
        ]
        self._ranges.insert(0, EditedRange(path, line))
        del self._ranges[self.size :]

    def forget(self, path: str) -> None:
        """Drop the edits of a document that was closed."""
        self._ranges = [r for r in self._ranges if r.path != path]

    def ranges(self) -> tuple[EditedRange, ...]:
        return tuple(self._ranges)


@dataclass
class Deadline:
    """A time budget in milliseconds, from now, on `clock` (seconds)."""

    budget_ms: float
    clock: Callable[[], float] = time.perf_counter
    start: float = field(init=False)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def expired(self) -> bool:
        return (self.clock() - self.start) * 1000 >= self.budget_ms
