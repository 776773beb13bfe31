"""The documents the server keeps: pygls' own, with lines split where LSP splits them.

pygls splits a document with `str.splitlines`, which also breaks at form feeds, vertical tabs,
`\\x1c`-`\\x1e`, `\\x85`, `\\u2028` and `\\u2029`. LSP lines end only at `\\n`, `\\r\\n` and
`\\r`, so in a file holding a form feed (a page break, common in older C and Lisp sources) every
incremental edit after it landed on the wrong line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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
