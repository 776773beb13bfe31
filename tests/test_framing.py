"""The stdio frame reader: good frames, broken ones, and finding the next good one."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from lsp_server.framing import MAX_BODY, serve_frames


class BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def readline(self) -> bytes:
        end = self.data.find(b"\n")
        end = len(self.data) if end < 0 else end + 1
        line, self.data = self.data[:end], self.data[end:]
        return line

    async def readexactly(self, n: int) -> bytes:
        body, self.data = self.data[:n], self.data[n:]
        return body


class Collector:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def structure_message(self, data: dict[str, Any]) -> Any:
        return data

    def handle_message(self, message: Any) -> None:
        self.messages.append(message)


def frame(message: Any) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


async def read_all(data: bytes) -> tuple[list[Any], list[Exception]]:
    collector, errors = Collector(), []
    await serve_frames(
        threading.Event(), BytesReader(data), collector, lambda exc, _: errors.append(exc)
    )
    return collector.messages, errors


GOOD = frame({"id": 1})
LATER = frame({"id": 2})


@pytest.mark.parametrize(
    ("data", "expected", "errors"),
    [
        (GOOD + LATER, [{"id": 1}, {"id": 2}], 0),
        (b"content-length:  8\r\nContent-Type: x\r\n\r\n" + b'{"id":1}', [{"id": 1}], 0),
        (b"Content-Length: abc\r\n\r\n" + b'{"id": 9}' + LATER, [{"id": 2}], 0),
        (b"Content-Type: x\r\n\r\n" + b'{"id": 9}' + LATER, [{"id": 2}], 0),
        (b"Content-Length: 4\r\n\r\n" + b'{"id": 9}' + LATER, [{"id": 2}], 1),  # body cut short
        (b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1) + LATER, [{"id": 2}], 0),
        (b"Content-Length: 3\r\n\r\nnot" + LATER, [{"id": 2}], 1),  # not JSON: reported
        (GOOD + b"Content-Length: 50\r\n\r\n" + b"{}", [{"id": 1}], 0),  # input ends in a body
        (b"", [], 0),
    ],
)
async def test_frames(data: bytes, expected: list[Any], errors: int) -> None:
    messages, seen_errors = await read_all(data)
    assert messages == expected
    assert len(seen_errors) == errors
