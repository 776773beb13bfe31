"""A wisp server driven in process through its protocol, and what it writes back."""

from __future__ import annotations

import json
from typing import Any

from lsp_server.features import create_server
from lsp_server.server import WispServer


class Wire:
    """Stands in for stdout: collects every message the server writes."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.sent.append(json.loads(data.split(b"\r\n\r\n", 1)[1]))

    def close(self) -> None:
        pass

    def answer(self, request_id: Any) -> dict[str, Any] | None:
        return next((m for m in self.sent if m.get("id") == request_id and "method" not in m), None)

    def statuses(self) -> list[dict[str, Any]]:
        return [m["params"] for m in self.sent if m.get("method") == "wisp/status"]


def wired_server() -> tuple[WispServer, Wire]:
    server = create_server()
    wire = Wire()
    server.protocol.set_writer(wire)
    return server, wire


def send(server: WispServer, message: dict[str, Any]) -> None:
    server.protocol.handle_message({"jsonrpc": "2.0", **message})


def initialize(server: WispServer) -> None:
    send(server, {"id": "init", "method": "initialize", "params": {"capabilities": {}}})
