"""The documents the server keeps: pygls' own, with lines split where LSP splits them; and
the cursor last seen in each.

pygls splits a document with `str.splitlines`, which also breaks at form feeds, vertical tabs,
`\\x1c`-`\\x1e`, `\\x85`, `\\u2028` and `\\u2029`. LSP lines end only at `\\n`, `\\r\\n` and
`\\r`, so in a file holding a form feed (a page break, common in older C and Lisp sources) every
incremental edit after it landed on the wrong line.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


class LspTextDocument(TextDocument):
    """A pygls document whose lines are LSP lines (each keeps its line break)."""

    @property
    def lines(self) -> Sequence[str]:
        return tuple(_LINE.findall(self.source))


class LspWorkspace(Workspace):
    """A pygls workspace that keeps `LspTextDocument`s."""

    def _create_text_document(
        self,
        doc_uri: str,
        source: str | None = None,
        version: int | None = None,
        language_id: str | None = None,
    ) -> TextDocument:
        return LspTextDocument(
            doc_uri,
            source=source,
            version=version,
            language_id=language_id,
            sync_kind=self._sync_kind,
            position_codec=self.position_codec,
        )

    @classmethod
    def like(cls, workspace: Workspace) -> LspWorkspace:
        """A new, empty workspace with `workspace`'s root, folders, sync kind and encoding."""
        return cls(
            workspace.root_uri,
            workspace._sync_kind,
            list(workspace.folders.values()),
            workspace.position_encoding,
        )


class Cursors:
    """Where the cursor was last seen in each document (by URI), in the client's units.

    LSP never says where the cursor is; a completion request's position and the end of an edit
    (where typing or pasting leaves it) are the best evidence. Bounded: the least recently seen
    documents are forgotten first.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._seen: OrderedDict[str, types.Position] = OrderedDict()

    def note(self, uri: str, position: types.Position) -> None:
        self._seen[uri] = position
        self._seen.move_to_end(uri)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def get(self, uri: str) -> types.Position | None:
        return self._seen.get(uri)

    def forget(self, uri: str) -> None:
        self._seen.pop(uri, None)
