"""A bare JSON-RPC client over a `wisp serve` subprocess's stdio, able to send anything.

pytest-lsp's client only sends well-formed messages; the fuzzing and exit tests need to send
broken frames, wrong types and badly timed notifications, and to see every byte that comes back.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SERVER = [sys.executable, "-m", "lsp_server.cli", "serve"]


class RawClient:
    """`wisp serve` as a subprocess; messages it sends are collected by a reader thread."""

    def __init__(self, env: dict[str, str] | None = None, stderr_path: Path | None = None) -> None:
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        self._stderr_file = open(stderr_path or os.devnull, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            SERVER,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            env=full_env,
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.garbage: list[bytes] = []  # frames the server wrote that were not JSON
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- sending --------------------------------------------------------------------------
    def send_bytes(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send_body(self, body: bytes) -> None:
        self.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def send(self, message: dict[str, Any]) -> None:
        self.send_body(json.dumps({"jsonrpc": "2.0", **message}).encode())

    def request(self, method: str, params: Any = None) -> int:
        self._next_id += 1
        self.send({"id": self._next_id, "method": method, "params": params})
        return self._next_id

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"method": method, "params": params})

    # -- receiving ------------------------------------------------------------------------
    def response(self, request_id: int | str, timeout: float = 30) -> dict[str, Any]:
        """The answer to `request_id` (waiting for it); answers the server's own requests."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.seen:
                if message.get("id") == request_id and "method" not in message:
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to request {request_id!r}")
            try:
                self._take(self.messages.get(timeout=left))
            except queue.Empty:
                continue

    def notifications(self, method: str) -> list[dict[str, Any]]:
        self.drain()
        return [m for m in self.seen if m.get("method") == method and "id" not in m]

    def drain(self) -> None:
        while True:
            try:
                self._take(self.messages.get_nowait())
            except queue.Empty:
                return

    def wait_status(self, *states: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.notifications("wisp/status"):
                if message["params"]["state"] in states:
                    return message["params"]
            time.sleep(0.05)
        raise TimeoutError(f"no wisp/status in {states}")

    def _take(self, message: dict[str, Any]) -> None:
        self.seen.append(message)
        if "method" in message and "id" in message:  # a request from the server: answer it
            result: Any = None
            if message["method"] == "workspace/configuration":
                result = [None for _ in message.get("params", {}).get("items", [])]
            self.send({"id": message["id"], "result": result})

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii", "replace").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length is None:
                continue
            body = stream.read(length)
            try:
                self.messages.put(json.loads(body))
            except ValueError:
                self.garbage.append(body)

    # -- session --------------------------------------------------------------------------
    def initialize(self, options: Any = None, capabilities: Any = None) -> dict[str, Any]:
        answer = self.response(
            self.request(
                "initialize",
                {
                    "processId": None,
                    "rootUri": None,
                    "capabilities": capabilities or {},
                    "initializationOptions": options,
                },
            )
        )
        self.notify("initialized", {})
        return answer

    def open(self, uri: str, text: str, language: str = "python", version: int = 1) -> None:
        self.notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": uri,
                    "languageId": language,
                    "version": version,
                    "text": text,
                }
            },
        )

    def finish(self, timeout: float = 30) -> int:
        """Shut down and exit politely; the exit code."""
        self.response(self.request("shutdown"), timeout=timeout)
        self.notify("exit")
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        try:
            code = self.process.wait(timeout)
        finally:
            self.close()
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._stderr_file.close()
