"""didOpen, didChange and didClose: where the user edited last, for the context of other
documents, and idle prefill of the document's next prompt."""

from __future__ import annotations

from urllib.parse import unquote

from lsprotocol import types

from lsp_server import idle_prefill
from lsp_server.requests import display_path
from lsp_server.server import WispServer


def register(server: WispServer) -> None:
    # pygls applies the change to the workspace first, then calls these.
    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: WispServer, params: types.DidOpenTextDocumentParams) -> None:
        idle_prefill.opened(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: WispServer, params: types.DidChangeTextDocumentParams) -> None:
        path = _path(ls, params.text_document.uri)
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                line = change.range.start.line + change.text.count("\n")
                ls.recent_edits.record(path, line)
        idle_prefill.edited(ls, params.text_document.uri, params.content_changes)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: WispServer, params: types.DidCloseTextDocumentParams) -> None:
        path = _path(ls, params.text_document.uri)
        ls.recent_edits.forget(path)
        if ls.engine is not None:
            ls.engine.forget(path)
        idle_prefill.closed(ls, params.text_document.uri)


def _path(ls: WispServer, uri: str) -> str:
    """The path the engine knows the document by (relative to the workspace root)."""
    return display_path(ls, ls.workspace.get_text_document(unquote(uri)).path)
