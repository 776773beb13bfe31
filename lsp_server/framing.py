"""Reading LSP frames from stdio, finding the next good frame after a broken one.

pygls' reader trusts every header: after a `Content-Length` that is missing, not a number or
wrong, it reads the following messages as headers and never finds its footing. This reader
takes the length from any line that carries one, even glued to the end of a broken body, so a
broken frame costs that frame and nothing after it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

LENGTH = re.compile(rb"content-length:[ \t]*(\d+)", re.IGNORECASE)
MAX_BODY = 256 * 1024 * 1024  # a larger length is taken for a broken header, not allocated


class Reader(Protocol):
    def readline(self) -> Awaitable[bytes]: ...

    def readexactly(self, n: int) -> Awaitable[bytes]: ...


class Handler(Protocol):
    def structure_message(self, data: dict[str, Any]) -> Any: ...

    def handle_message(self, message: Any) -> None: ...


async def serve_frames(
    stop: threading.Event,
    reader: Reader,
    handler: Handler,
    on_error: Callable[[Exception, Any], Any],
) -> None:
    """Decode and hand on each frame until end of input or `stop`; errors go to `on_error`."""
    while not stop.is_set():
        length = await read_header(reader)
        if length is None:
            return
        body = await reader.readexactly(length)
        if len(body) < length:
            return  # the input ended inside a body
        try:
            handler.handle_message(json.loads(body, object_hook=handler.structure_message))
        except Exception as exc:  # one bad message must not end the loop
            on_error(exc, None)


async def read_header(reader: Reader) -> int | None:
    """The body length of the next frame; None at end of input."""
    length: int | None = None
    while True:
        line = await reader.readline()
        if not line:
            return None
        if not line.strip():
            if length is not None:
                return length
            log.warning("skipped a frame without a usable Content-Length header")
            continue
        if (found := LENGTH.search(line)) is None:
            continue  # another header, or the rest of a broken frame
        if found.start() > 0:
            log.warning("skipped %d bytes of a broken frame", found.start())
        value = int(found.group(1))
        length = value if value <= MAX_BODY else None
        if length is None:
            log.warning("skipped a frame claiming %d bytes", value)
