"""The front door, in process: answers to broken requests, documents kept as LSP says."""

from __future__ import annotations

from typing import Any

import pytest
from in_process import Wire, initialize, send, wired_server

from lsp_server.server import WispServer


@pytest.fixture
def server() -> tuple[WispServer, Wire]:
    return wired_server()


def answer(wire: Wire, request_id: Any) -> dict[str, Any]:
    found = wire.answer(request_id)
    assert found is not None, f"no answer to {request_id!r}"
    return found


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("textDocument/inlineCompletion", {"x": 1}, -32602),
        ("textDocument/completion", None, -32602),
        ("textDocument/hover", None, -32601),
        ("textDocument/hover", {"x": [1]}, -32601),
        ("textDocument/didOpen", {"textDocument": {}}, -32600),  # a notification with an id
        ("initialize", {"capabilities": {}}, -32600),  # a second one
        ("workspace/executeCommand", {"command": "nope"}, -32602),
    ],
)
def test_requests_that_cannot_be_served_get_an_error(
    server: tuple[WispServer, Wire], method: str, params: Any, code: int
) -> None:
    """Before: the first four were never answered at all."""
    ls, wire = server
    initialize(ls)
    send(ls, {"id": 7, "method": method, "params": params})
    assert answer(wire, 7)["error"]["code"] == code


def test_requests_before_initialize_and_after_shutdown(server: tuple[WispServer, Wire]) -> None:
    ls, wire = server
    send(ls, {"id": 1, "method": "wisp/stats"})
    assert answer(wire, 1)["error"]["code"] == -32002
    initialize(ls)
    send(ls, {"id": 2, "method": "shutdown"})
    send(ls, {"id": 3, "method": "wisp/stats"})
    assert answer(wire, 3)["error"]["code"] == -32600


@pytest.mark.parametrize(
    "message",
    [[1, 2], {"id": {"a": 1}, "method": "wisp/stats"}, {"id": 5, "method": "x", "jsonrpc": "1.0"}],
)
def test_messages_that_are_not_json_rpc_are_refused(
    server: tuple[WispServer, Wire], message: Any
) -> None:
    ls, wire = server
    initialize(ls)
    ls.protocol.handle_message(message)
    assert wire.sent[-1]["error"]["code"] == -32600


@pytest.mark.parametrize("separator", ["\f", "\v", "\x85", "\u2028"])
def test_edits_after_a_form_feed_land_on_the_lsp_line(
    server: tuple[WispServer, Wire], separator: str
) -> None:
    """pygls alone also splits lines at these, and put this edit before `b`."""
    ls, _ = server
    initialize(ls)
    uri = "file:///a.py"
    document = {"uri": uri, "languageId": "python", "version": 1, "text": f"a{separator}b\nc"}
    send(ls, {"method": "textDocument/didOpen", "params": {"textDocument": document}})
    at = {"line": 1, "character": 0}
    change = {"range": {"start": at, "end": at}, "text": "X"}
    send(
        ls,
        {
            "method": "textDocument/didChange",
            "params": {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [change]},
        },
    )
    assert ls.workspace.get_text_document(uri).source == f"a{separator}b\nXc"
