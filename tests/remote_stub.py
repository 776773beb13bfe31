"""A scripted HTTP server on loopback for the remote backend's failure tests.

Each request takes the next behaviour from a script; the server records what it was sent and
whether the client hung up early. The happy paths are tested against a real llama.cpp server
(tests/test_remote_llamacpp.py); this one plays the failures a real server is hard to make on cue.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Behaviour = Callable[["Handler", dict[str, Any]], None]


@dataclass
class Record:
    paths: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    connections: set[int] = field(default_factory=set)  # client ports
    hung_up: int = 0  # streams the client closed before they ended
    chunks: int = 0  # stream chunks written


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.send_json(200, {"object": "list", "data": [{"id": "stub-model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        record = self.server.record
        record.paths.append(self.path)
        record.bodies.append(body)
        record.headers.append(dict(self.headers))
        record.connections.add(self.client_address[1])
        behaviour = self.server.script.pop(0) if self.server.script else self.server.default
        behaviour(self, body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, text: str) -> bool:
        """Send one chunk; False once the client has hung up."""
        data = text.encode()
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            self.server.record.chunks += 1
        except OSError:
            self.server.record.hung_up += 1
            self.close_connection = True
            return False
        return True

    def end_stream(self) -> None:
        self.chunk("")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    record: Record
    script: list[Behaviour]
    default: Behaviour


def sse(pieces: list[str], pause_s: float = 0.0, finish: str = "stop") -> Behaviour:
    """An OpenAI completion stream of `pieces`, one chunk each, then [DONE]."""

    def behave(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream()
        for piece in pieces:
            choice = {"text": piece, "index": 0, "finish_reason": None}
            if body.get("logprobs"):
                choice["logprobs"] = {"tokens": [piece], "token_logprobs": [-0.1]}
            if not h.chunk(f"data: {json.dumps({'choices': [choice]})}\n\n"):
                return
            time.sleep(pause_s)
        done = {"choices": [{"text": "", "index": 0, "finish_reason": finish}]}
        h.chunk(f"data: {json.dumps(done)}\n\n")
        h.chunk("data: [DONE]\n\n")
        h.end_stream()

    return behave


def status(code: int, message: str, headers: dict[str, str] | None = None) -> Behaviour:
    return lambda h, _body: h.send_json(code, {"error": {"message": message}}, headers)


def raw_lines(*lines: str) -> Behaviour:
    """A stream of these lines as they are, then its end."""

    def behave(h: Handler, _body: dict[str, Any]) -> None:
        h.start_stream()
        for line in lines:
            h.chunk(line + "\n")
        h.end_stream()

    return behave


def die_after(pieces: list[str]) -> Behaviour:
    """Stream `pieces`, then drop the connection without ending the answer."""

    def behave(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream()
        for piece in pieces:
            choice = {"text": piece, "index": 0}
            h.chunk(f"data: {json.dumps({'choices': [choice]})}\n\n")
        h.close_connection = True
        h.connection.shutdown(2)

    return behave


@contextmanager
def stub_server(
    script: list[Behaviour] | None = None,
    default: Behaviour | None = None,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[tuple[str, Record, _Server]]:
    """A server on a free loopback port: (base URL, what it saw, the server)."""
    server = _Server(("127.0.0.1", 0), Handler)
    server.record = Record()
    server.script = list(script or [])
    server.default = default or sse(["pass"])
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}/v1", server.record, server
    finally:
        server.shutdown()
        server.server_close()
