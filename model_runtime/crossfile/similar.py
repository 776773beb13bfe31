"""Snippets of other documents ranked by how many identifiers they share with the cursor's code.

Each document is cut into overlapping windows of lines; a window's score is the Jaccard
similarity of its identifier set with the set of the code around the cursor (as Copilot's
neighbouring-tab snippets do). Windows of a document are cut once per text and kept.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from model_runtime.crossfile.documents import Deadline, OpenDocument, Snippet

WINDOW_LINES = 12
STRIDE_LINES = 6
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words every file of a language repeats: they say nothing about which snippet is related.
COMMON_WORDS = frozenset({
    "and", "as", "assert", "async", "await", "break", "case", "catch", "class", "const",
    "continue", "def", "default", "del", "elif", "else", "except", "export", "false", "finally",
    "fn", "for", "from", "func", "function", "if", "import", "in", "is", "let", "local", "new",
    "none", "not", "null", "or", "pass", "private", "public", "raise", "return", "self",
    "static", "struct", "switch", "this", "throw", "true", "try", "type", "var", "void", "while",
    "with", "yield", "None", "True", "False",
})  # fmt: skip


def identifiers(text: str) -> frozenset[str]:
    """The identifiers in `text` (two characters or more), common keywords left out."""
    return frozenset(
        word for word in _IDENTIFIER.findall(text) if len(word) > 1 and word not in COMMON_WORDS
    )


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|, 0 when both are empty."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


@dataclass(frozen=True)
class Window:
    """Lines `start`..`start + n` of a document, and their identifiers."""

    start: int
    text: str
    words: frozenset[str]


def windows(text: str, size: int = WINDOW_LINES, stride: int = STRIDE_LINES) -> list[Window]:
    """Overlapping windows of `size` lines every `stride` lines; blank windows are left out."""
    lines = text.split("\n")
    out = []
    for start in range(0, max(len(lines) - size + stride, 1), stride):
        chunk = "\n".join(lines[start : start + size]).strip("\n")
        if chunk.strip():
            out.append(Window(start, chunk, identifiers(chunk)))
    return out


class WindowIndex:
    """Windows per document text, for the last `size` texts seen."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._windows: OrderedDict[tuple[str, int], list[Window]] = OrderedDict()

    def of(self, doc: OpenDocument) -> list[Window]:
        key = (doc.path, hash(doc.text))
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = windows(doc.text)
            if len(self._windows) > self.size:
                self._windows.popitem(last=False)
        self._windows.move_to_end(key)
        return found


def similar_snippets(
    query: frozenset[str],
    others: Sequence[OpenDocument],
    deadline: Deadline,
    index: WindowIndex,
    limit: int = 8,
) -> list[Snippet]:
    """Up to `limit` windows of `others` sharing identifiers with `query`, best first.

    At most one window per place: a window overlapping a better one of the same document is
    skipped. Documents not reached before the deadline are not searched.
    """
    scored: list[tuple[float, str, Window]] = []
    for doc in others:
        if deadline.expired():
            break
        for window in index.of(doc):
            if score := jaccard(query, window.words):
                scored.append((score, doc.path, window))
    scored.sort(key=lambda item: (-item[0], item[1], item[2].start))
    chosen: list[Snippet] = []
    taken: dict[str, list[int]] = {}
    for score, path, window in scored:
        starts = taken.setdefault(path, [])
        if any(abs(window.start - s) < WINDOW_LINES for s in starts):
            continue
        starts.append(window.start)
        chosen.append(Snippet(path, window.text, "similar", score))
        if len(chosen) == limit:
            break
    return chosen
