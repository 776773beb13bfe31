"""Snippets of the places the user edited last in other documents."""

from __future__ import annotations

from collections.abc import Sequence

from model_runtime.crossfile.documents import Deadline, EditedRange, OpenDocument, Snippet

LINES_BEFORE = 3
LINES_AFTER = 4


def edit_snippets(
    edits: Sequence[EditedRange],
    others: Sequence[OpenDocument],
    deadline: Deadline,
    limit: int = 4,
) -> list[Snippet]:
    """The lines around each of the newest `limit` edits in `others`, newest first.

    Edits of documents that are not in `others` (the current one, closed ones) are skipped.
    """
    texts = {doc.path: doc.text for doc in others}
    snippets: list[Snippet] = []
    for rank, edit in enumerate(edits):
        if len(snippets) == limit or deadline.expired():
            break
        text = texts.get(edit.path)
        if text is None:
            continue
        lines = text.split("\n")
        start = max(0, edit.line - LINES_BEFORE)
        chunk = "\n".join(lines[start : edit.line + LINES_AFTER + 1]).strip("\n")
        if chunk.strip():
            snippets.append(Snippet(edit.path, chunk, "edit", 1.0 / (rank + 1)))
    return snippets
